//! Following: a second store on the same engine (another instance on one database) applies
//! the writer's events in memory ([`GraphStore::follow`]) and answers as the writer does,
//! then takes over and writes what a fresh load of the engine holds.

use std::sync::Arc;

use graphdb::{Clock, EdgeKind, GraphStore, ManualClock, PackageSets, Teams};
use proptest::prelude::*;

use crate::feed::{assert_same_namespaces, op, run_ops, Op};

/// The events the follower has not applied yet, applied, and its head moved past them.
fn follow(follower: &GraphStore) -> graphdb::Followed {
    let log = follower.change_log();
    let newest = log.newest_stored().unwrap();
    let events = log.read_stored(log.head(), newest, usize::MAX).unwrap();
    let followed = follower.follow(&events).unwrap();
    log.follow_to(newest);
    followed
}

/// The writer runs `ops`; the follower, opened on the same engine before the first, loads
/// its namespaces after `load_at` of them (so the events before are in its load, and
/// skipped) and follows every `every` operations. At the end it holds what the writer holds,
/// having refused no event; after taking over, its own writes land where a fresh load of the
/// engine finds them (node ids as stored).
fn follower_property(ops: &[Op], load_at: usize, every: usize) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::at_seconds(1_000_000));
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let open = || {
        GraphStore::builder(Arc::clone(&engine))
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let writer = open();
    let follower = open();
    let now = clock.now_seconds();
    let mut loaded = false;
    for (i, chunk) in ops.chunks(every).enumerate() {
        run_ops(&writer, &clock, now, chunk)?;
        if !loaded && i * every >= load_at {
            Teams::open(&follower).unwrap();
            PackageSets::open(&follower).unwrap();
            loaded = true;
        }
        let followed = follow(&follower);
        prop_assert!(followed.refused.is_none(), "{:?}", followed.refused);
    }
    Teams::open(&follower).unwrap();
    PackageSets::open(&follower).unwrap();
    assert_same_namespaces(&writer, &follower);
    prop_assert_eq!(follower.take_over(), 0);
    // Writes naming every node the follower knows, and creating some: each uses node ids.
    let teams = Teams::open(&follower).unwrap();
    let sets = PackageSets::open(&follower).unwrap();
    teams.add_person("later").unwrap();
    for i in 0..6 {
        let old = format!("n{i}");
        let member = EdgeKind::named("member");
        // Refusals (a person as a team, a cycle) are fine: the others write.
        let _ = teams.put_member(&old, "later", &member, None);
        let _ = teams.put_member("late-team", &old, &member, None);
        let _ = sets.put_item(&old, "late-package", graphdb::SetItem::Package);
    }
    let fresh = open();
    assert_same_namespaces(&follower, &fresh);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_follower_applies_the_writers_events_in_memory(
        ops in prop::collection::vec(op(), 1..60),
        load_at in 0usize..60,
        every in 1usize..8,
    ) {
        follower_property(&ops, load_at, every)?;
    }
}

/// An import records counts, not rows: the follower reloads the namespace instead.
#[test]
fn an_import_makes_the_follower_reload() {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let writer = GraphStore::open(Arc::clone(&engine)).unwrap();
    let follower = GraphStore::open(Arc::clone(&engine)).unwrap();
    Teams::open(&follower).unwrap();
    let teams = Teams::open(&writer).unwrap();
    teams
        .put_member("t", "p", &EdgeKind::named("member"), None)
        .unwrap();
    let followed = follow(&follower);
    assert_eq!((followed.applied, followed.reloaded), (3, 0));
    teams
        .import_tsv(
            "team\tmember\trole\texpires\nk\tq\tadmin\t\n".as_bytes(),
            None,
        )
        .unwrap();
    teams.remove_membership("t", "p").unwrap();
    let followed = follow(&follower);
    assert_eq!((followed.applied, followed.reloaded), (0, 1));
    let copy = Teams::open(&follower).unwrap();
    assert!(copy.is_member("q", "k").unwrap());
    assert!(!copy.is_member("p", "t").unwrap());
    assert_same_namespaces(&writer, &follower);
}

/// A follower that loaded a namespace after its newest node was removed gives a new node the
/// id the writer gave it (the highest live id plus one on both), so after taking over it
/// writes with the ids the engine holds.
#[test]
fn a_new_writer_writes_with_the_stored_node_ids() {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let writer = GraphStore::open(Arc::clone(&engine)).unwrap();
    let teams = Teams::open(&writer).unwrap();
    let member = EdgeKind::named("member");
    teams.put_member("t", "a", &member, None).unwrap();
    teams.add_person("b").unwrap();
    teams.remove("b").unwrap();
    let follower = GraphStore::open(Arc::clone(&engine)).unwrap();
    Teams::open(&follower).unwrap();
    teams.add_person("c").unwrap();
    follow(&follower);
    let id = |store: &GraphStore| Teams::open(store).unwrap().namespace().id("c");
    assert_eq!(id(&follower), id(&writer));
    assert_eq!(follower.take_over(), 0);
    let copy = Teams::open(&follower).unwrap();
    copy.put_member("t", "d", &member, None).unwrap();
    copy.put_member("t", "c", &member, None).unwrap();
    assert_same_namespaces(&follower, &GraphStore::open(engine).unwrap());
}
