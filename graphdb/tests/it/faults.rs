//! A failed engine write: the namespace goes back to what the engine holds and refuses
//! further writes; reopening recovers a consistent index.
//!
//! Then the same at every N: small scripts of team and package-set writes run
//! over a [`FaultyEngine`] that fails its Nth write or the sync of it; after a simulated crash
//! (only what was synced survives) every acknowledged write is there, the failed one left no
//! trace, and `check` finds the index equal to a fresh BFS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use engine::testing::every_fault;
use engine::{
    Backend, Direction, Durability, Engine, Fault, FaultyEngine, Keyspace, KvIter, MemEngine,
    ReadView, ScanRange, WriteBatch,
};
use graphdb::{Error, GraphStore, Role};

/// Which writes a [`RefusingEngine`] refuses, and with what: called with the write's number
/// (0-based) and its batch.
type Refusal = Box<dyn Fn(usize, &WriteBatch) -> Option<engine::Error> + Send + Sync>;

/// Delegates to a `MemEngine` and refuses (nothing applied) the writes its rule picks.
struct RefusingEngine {
    inner: MemEngine,
    writes: AtomicUsize,
    refuse: Refusal,
}

impl RefusingEngine {
    fn new(inner: MemEngine, refuse: Refusal) -> Self {
        RefusingEngine {
            inner,
            writes: AtomicUsize::new(0),
            refuse,
        }
    }
}

impl std::fmt::Debug for RefusingEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusingEngine")
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl ReadView for RefusingEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> engine::Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        range: ScanRange,
        direction: Direction,
    ) -> engine::Result<KvIter<'_>> {
        self.inner.scan(keyspace, range, direction)
    }
}

impl Engine for RefusingEngine {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn keyspace(&self, name: &str) -> engine::Result<Keyspace> {
        self.inner.keyspace(name)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> engine::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = (self.refuse)(n, &batch) {
            return Err(error);
        }
        self.inner.write(batch, durability)
    }

    fn snapshot(&self) -> engine::Result<Box<dyn ReadView + '_>> {
        self.inner.snapshot()
    }

    fn flush(&self) -> engine::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn failed_write_leaves_memory_as_the_engine() {
    let root = MemEngine::new(graphdb::KEYSPACES);
    // Writes: namespace creation, 3 nodes, 2 memberships; the 7th write (index 6) fails.
    let engine = Arc::new(RefusingEngine::new(
        root.reopen(graphdb::KEYSPACES),
        Box::new(|n, _| {
            (n == 6).then(|| engine::Error::Config {
                reason: "injected write failure".into(),
            })
        }),
    ));
    let store = GraphStore::open(engine).unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    teams.add_person("p").unwrap();
    teams.add_team("a").unwrap();
    teams.add_team("b").unwrap();
    teams.set_membership("b", "p", Role::Member, None).unwrap();
    teams.set_membership("a", "b", Role::Member, None).unwrap();
    assert!(teams.is_member("p", "a").unwrap());
    let err = teams.remove_membership("a", "b").unwrap_err();
    assert!(matches!(err, Error::Engine(_)), "{err}");
    // The failed removal is not visible: memory was reloaded from the engine.
    assert!(teams.is_member("p", "a").unwrap());
    assert!(teams.check().is_clean());
    let err = teams.add_person("q").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    drop(teams);
    drop(store);

    let store = GraphStore::open(Arc::new(root.reopen(graphdb::KEYSPACES))).unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    assert!(teams.is_member("p", "a").unwrap());
    assert!(teams.remove_membership("a", "b").unwrap().is_some());
    assert!(!teams.is_member("p", "a").unwrap());
    assert!(teams.check().is_clean());
}

/// Concurrent writers of one namespace queue their batches in the log and have them written
/// after releasing the writer mutex, so a refused batch may have later ones of the same
/// namespace queued behind it, computed from its change: they must be refused too (never
/// written without it), and memory must end as the engine holds it. A fenced refusal does not
/// poison, so writing goes on.
#[test]
fn a_refused_write_refuses_the_writes_queued_behind_it_and_memory_stays_the_engines() {
    const WRITERS: usize = 8;
    const WRITES: usize = 40;
    let root = MemEngine::new(graphdb::KEYSPACES);
    // Refused as a fenced engine refuses (nothing applied, no poisoning): every batch that
    // writes a value containing the needle.
    const NEEDLE: &[u8] = b"refused-person";
    let engine = Arc::new(RefusingEngine::new(
        root.reopen(graphdb::KEYSPACES),
        Box::new(|_, batch| {
            let refused = batch.ops().any(|op| {
                matches!(op, engine::BatchOp::Put { value, .. }
                    if value.windows(NEEDLE.len()).any(|w| w == NEEDLE))
            });
            refused.then(|| engine::Error::Fenced {
                name: "directory".into(),
                epoch: 1,
                current: Some(2),
            })
        }),
    ));
    let store = GraphStore::open(engine).unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    let member = graphdb::EdgeKind::Membership(Role::Member);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (teams, refused, member) = (&teams, &refused, &member);
            scope.spawn(move || {
                for i in 0..WRITES {
                    // Each write creates a person and may create the team, so its batch
                    // depends on the node ids the earlier ones took.
                    let team = format!("t{}", i % 5);
                    let person = if i % 10 == 9 {
                        format!("refused-person-{w}-{i}")
                    } else {
                        format!("p{w}-{i}")
                    };
                    match teams.put_member(&team, &person, member, None) {
                        Ok(_) => {}
                        Err(Error::Engine(_) | Error::Poisoned { .. }) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
            });
        }
    });
    assert!(refused.load(Ordering::SeqCst) >= WRITERS * WRITES / 10);
    assert!(teams.check().is_clean());
    assert!(teams.kind("refused-person-0-9").is_none());
    // Writing goes on after a fenced refusal.
    teams
        .put_member(
            "t0",
            "last",
            &graphdb::EdgeKind::Membership(Role::Admin),
            None,
        )
        .unwrap();
    let export = |teams: &graphdb::Teams| {
        let mut tsv = Vec::new();
        teams.export_tsv(&mut tsv).unwrap();
        String::from_utf8(tsv).unwrap()
    };
    let edges = export(&teams);
    assert!(edges.contains("last"), "{edges}");
    drop(teams);
    drop(store);
    // Memory was what the engine holds.
    let store = GraphStore::open(Arc::new(root.reopen(graphdb::KEYSPACES))).unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    assert_eq!(export(&teams), edges);
    assert!(teams.check().is_clean());
}

/// The teams and package-set script: each step opens the store afresh over the engine (as a
/// server keeps it open, but the state must come from the engine either way) and makes one
/// write.
fn graph_step(engine: &Arc<FaultyEngine>, step: usize) -> Result<(), String> {
    let clock = Arc::new(graphdb::ManualClock::at_seconds(1_000));
    let store = GraphStore::builder(Arc::clone(engine) as Arc<dyn Engine>)
        .clock(clock)
        .open()
        .map_err(|e| e.to_string())?;
    // The script counts the engine's operations: the history indexer's would come in between
    // (the histories read the unindexed events all the same).
    store.change_log().set_background_indexing(false);
    let teams = graphdb::Teams::open(&store).map_err(|e| e.to_string())?;
    let sets = graphdb::PackageSets::open(&store).map_err(|e| e.to_string())?;
    let result = match step {
        0 => teams.add_person("p").map(drop),
        1 => teams.add_team("a").map(drop),
        2 => teams.add_team("b").map(drop),
        3 => teams.set_membership("b", "p", Role::Member, None).map(drop),
        4 => teams
            .set_membership("a", "b", Role::Admin, Some(5_000))
            .map(drop),
        5 => teams.grant("p", "audits", "a", None).map(drop),
        6 => teams.remove_membership("a", "b").map(drop),
        7 => teams.set_membership("a", "p", Role::Member, None).map(drop),
        8 => teams
            .import_tsv(
                "team\tmember\trole\texpires\nc\ta\tmember\t\nc\tq\tadmin\t900\n".as_bytes(),
                None,
            )
            .map(drop),
        9 => teams.remove("b").map(drop),
        10 => sets.add_set("s").map(drop),
        11 => sets.add_package("bash").map(drop),
        12 => sets.insert("s", "bash").map(drop),
        13 => sets
            .import_tsv(
                "set\titem\ttype\nall\ts\tset\nall\tcore\tpackage\n".as_bytes(),
                None,
            )
            .map(drop),
        14 => sets.take("all", "s").map(drop),
        _ => unreachable!(),
    };
    result.map_err(|e| e.to_string())
}

const GRAPH_STEPS: usize = 15;

fn graph_fingerprint(engine: &Arc<FaultyEngine>) -> String {
    let clock = Arc::new(graphdb::ManualClock::at_seconds(1_000));
    let store = GraphStore::builder(Arc::clone(engine) as Arc<dyn Engine>)
        .clock(clock)
        .open()
        .expect("reopen after the crash");
    let teams = graphdb::Teams::open(&store).unwrap();
    let sets = graphdb::PackageSets::open(&store).unwrap();
    assert!(teams.check().is_clean(), "{:?}", teams.check());
    assert!(sets.check().is_clean(), "{:?}", sets.check());
    let mut out = Vec::new();
    teams.export_tsv(&mut out).unwrap();
    sets.export_tsv(&mut out).unwrap();
    let mut text = String::from_utf8(out).unwrap();
    for (member, team) in [("p", "a"), ("p", "c"), ("b", "a")] {
        text += &format!(
            "{member} in {team}: {:?}\n",
            teams.is_member(member, team).ok()
        );
    }
    text += &format!("holds: {:?}\n", teams.is_holder("p", "audits", "a").ok());
    // The change feed: exactly the events of the acknowledged steps, in order.
    for (revision, change) in store.changes(0, 1000).unwrap().changes {
        text += &format!("{revision} {}\n", change.kind.as_str());
    }
    text
}

#[test]
fn every_injected_fault_keeps_acknowledged_graph_writes_and_nothing_else() {
    let injected = every_fault(
        graphdb::KEYSPACES,
        GRAPH_STEPS,
        graph_step,
        graph_fingerprint,
    );
    eprintln!("graphdb teams and package sets: {injected} distinct faults injected");
    assert!(injected > GRAPH_STEPS as u64);
}

/// Concurrent synced writers share group syncs; when the Nth engine operation fails (a write,
/// or the sync a group is waiting on), every writer not covered by an earlier successful sync
/// gets an error, later writes are refused, memory goes back to what the engine holds, and
/// after a crash every acknowledged write is there.
#[test]
fn a_failed_group_sync_fails_its_writers_and_keeps_every_acknowledged_write() {
    const WRITERS: usize = 4;
    const WRITES: usize = 15;
    let person = |w: usize, i: usize| format!("w{w}-p{i}");
    // The persons and teams, synced; then a fresh engine over that image, with the fault.
    let setup = Arc::new(FaultyEngine::new(graphdb::KEYSPACES));
    {
        let store = GraphStore::open(Arc::clone(&setup) as Arc<dyn Engine>).unwrap();
        let teams = graphdb::Teams::open(&store).unwrap();
        teams.add_team("t").unwrap();
        for w in 0..WRITERS {
            for i in 0..WRITES {
                teams.add_person(&person(w, i)).unwrap();
            }
        }
    }
    for fault in [Fault::Write, Fault::Sync] {
        for n in [1, 2, 7, 20, 45] {
            // Operation 1 is the open's flush (the change log's): count the writers' from 2.
            let engine = Arc::new(setup.crash().fail_at(n + 1, fault));
            let store = GraphStore::open(Arc::clone(&engine) as Arc<dyn Engine>).unwrap();
            // Operation N is a writer's, not the history indexer's.
            store.change_log().set_background_indexing(false);
            let teams = graphdb::Teams::open(&store).unwrap();
            let acknowledged: Vec<Vec<usize>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let teams = teams.clone();
                        scope.spawn(move || {
                            let mut acked = Vec::new();
                            let mut failed = false;
                            for i in 0..WRITES {
                                match teams.set_membership("t", &person(w, i), Role::Member, None) {
                                    Ok(_) => {
                                        assert!(!failed, "a write succeeded after a failure");
                                        acked.push(i);
                                    }
                                    Err(_) => failed = true,
                                }
                            }
                            acked
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let acked: usize = acknowledged.iter().map(Vec::len).sum();
            assert!(
                acked < WRITERS * WRITES,
                "{fault:?} at {n}: every write was acknowledged"
            );
            assert!(
                engine.operations() >= n,
                "{fault:?} at {n}: the engine made only {} operations",
                engine.operations()
            );
            // Refused from now on; memory is what the engine holds, and consistent.
            let err = teams.add_person("late").unwrap_err();
            assert!(
                matches!(err, Error::Poisoned { .. } | Error::Engine(_)),
                "{err}"
            );
            assert!(teams.check().is_clean(), "{:?}", teams.check());
            for (w, acked) in acknowledged.iter().enumerate() {
                for &i in acked {
                    assert!(teams.is_member(&person(w, i), "t").unwrap());
                }
            }
            drop(teams);
            drop(store);
            // After a crash: exactly the synced image, which holds every acknowledged write.
            let crashed = Arc::new(engine.crash());
            let store = GraphStore::open(crashed as Arc<dyn Engine>).unwrap();
            let teams = graphdb::Teams::open(&store).unwrap();
            assert!(teams.check().is_clean(), "{:?}", teams.check());
            for (w, acked) in acknowledged.iter().enumerate() {
                for &i in acked {
                    assert!(
                        teams.is_member(&person(w, i), "t").unwrap(),
                        "{fault:?} at {n}: acknowledged {} lost",
                        person(w, i)
                    );
                }
            }
            // The surviving feed rebuilds exactly the surviving store (no expiries here, so
            // any clock will do).
            let clock = Arc::new(graphdb::ManualClock::at_seconds(1_000));
            crate::feed::assert_replay_reproduces(&store, clock);
        }
    }
}
