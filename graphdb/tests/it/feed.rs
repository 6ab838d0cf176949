//! The change feed: events written with every write, their contents, histories, retention,
//! and the replay property (replaying the feed onto an empty store reproduces the store).

use std::sync::Arc;

use graphdb::Clock;
use graphdb::{
    Change, ChangeKind, Depth, EdgeKind, EdgeState, Error, GraphStore, ManualClock, PackageSets,
    Role, SetItem, Teams,
};
use proptest::prelude::*;

use crate::support::Fixture;

crate::backend_tests!(feed:
    every_write_records_its_event,
    histories_of_teams_and_persons,
    pruning_keeps_the_newest_and_refuses_pruned_reads,
    revisions_continue_after_reopen,
);

/// Every event of the feed, oldest first.
pub fn all_changes(store: &GraphStore) -> Vec<(u64, Change)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.changes(after, 64).expect("feed");
        if page.next == after {
            return out;
        }
        out.extend(page.changes);
        after = page.next;
    }
}

fn kinds(changes: &[(u64, Change)]) -> Vec<&'static str> {
    changes.iter().map(|(_, c)| c.kind.as_str()).collect()
}

/// Replays `store`'s feed onto an empty memory store with the same clock and checks that
/// both namespaces are equal: nodes, stored edges, transitive members of every group, and a
/// clean index.
pub fn assert_replay_reproduces(store: &GraphStore, clock: Arc<ManualClock>) {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .expect("memory engine");
    let replica = GraphStore::builder(engine)
        .clock(clock)
        .open()
        .expect("replica");
    let changes = all_changes(store);
    let revisions: Vec<u64> = changes.iter().map(|(r, _)| *r).collect();
    let expected: Vec<u64> = (1..=revisions.len() as u64).collect();
    assert_eq!(
        revisions, expected,
        "revisions are 1, 2, 3, ... without gaps"
    );
    for (revision, change) in &changes {
        assert!(
            replica.replay(change).expect("replay"),
            "{revision}: {change:?}"
        );
    }
    assert_same_namespaces(store, &replica);
    // The replica recorded the same events with the same actors.
    let replayed = all_changes(&replica);
    let strip = |changes: &[(u64, Change)]| -> Vec<(ChangeKind, String)> {
        changes
            .iter()
            .map(|(_, c)| (c.kind, c.actor.clone()))
            .collect()
    };
    assert_eq!(strip(&replayed), strip(&changes));
}

/// Checks that `copy` holds what `store` holds in its teams and package sets: nodes, stored
/// edges, transitive members of every group, and a clean index.
pub fn assert_same_namespaces(store: &GraphStore, replica: &GraphStore) {
    let pairs = [
        (
            Teams::open(store).unwrap().namespace().clone(),
            Teams::open(replica).unwrap().namespace().clone(),
        ),
        (
            PackageSets::open(store).unwrap().namespace().clone(),
            PackageSets::open(replica).unwrap().namespace().clone(),
        ),
    ];
    for (original, copy) in pairs {
        assert_eq!(
            copy.nodes(),
            original.nodes(),
            "nodes of {}",
            original.name()
        );
        assert_eq!(
            copy.edges(),
            original.edges(),
            "edges of {}",
            original.name()
        );
        let (a, b) = (original.view(), copy.view());
        for (name, kind) in original.nodes() {
            if kind == graphdb::NodeKind::Group {
                let all = |v: &graphdb::View<'_>| {
                    v.members(
                        &name,
                        Depth::Transitive,
                        graphdb::Filter::All,
                        None,
                        usize::MAX,
                    )
                    .unwrap()
                };
                assert_eq!(all(&b), all(&a), "members of {name}");
            }
        }
        drop((a, b));
        assert!(copy.check().is_clean());
    }
}

pub fn every_write_records_its_event(fx: Fixture) {
    let store = fx.open();
    let teams = Teams::open(&store).unwrap().acting_as("alice");
    let now = fx.clock.now_seconds();

    let r1 = teams
        .put_member("ubuntu", "bob", &EdgeKind::named("member"), None)
        .unwrap();
    assert_eq!(r1, 3, "team, person and membership: three revisions");
    let r2 = teams
        .set_membership("ubuntu", "bob", Role::Admin, Some(now + 100))
        .unwrap();
    assert_eq!(r2, 4);
    // Setting what is stored records nothing and answers the head.
    assert_eq!(
        teams
            .set_membership("ubuntu", "bob", Role::Admin, Some(now + 100))
            .unwrap(),
        4
    );
    assert_eq!(teams.add_team("ubuntu").unwrap(), 4);
    let r3 = teams.grant("bob", "audits", "ubuntu", None).unwrap();
    let r4 = teams.revoke("bob", "audits", "ubuntu").unwrap();
    assert_eq!((r3, r4), (5, Some(6)));
    assert_eq!(teams.revoke("bob", "audits", "ubuntu").unwrap(), None);
    assert_eq!(teams.remove_membership("ubuntu", "bob").unwrap(), Some(7));
    assert_eq!(teams.remove("bob").unwrap(), Some(8));
    let summary = teams
        .import_tsv(
            "team\tmember\trole\texpires\nkernel\tcarol\tmember\t\nkernel\tdave\tadmin\t\n"
                .as_bytes(),
            None,
        )
        .unwrap();
    assert_eq!(summary.revision, 9, "one event for the whole import");
    teams.rebuild().unwrap();

    let sets = PackageSets::open(&store).unwrap().acting_as("erin");
    assert_eq!(
        sets.put_item("desktop", "gedit", SetItem::Package).unwrap(),
        12
    );
    assert_eq!(sets.take("desktop", "gedit").unwrap(), Some(13));

    let changes = all_changes(&store);
    assert_eq!(
        kinds(&changes),
        [
            "team.created",
            "person.created",
            "membership.added",
            "membership.changed",
            "relation.granted",
            "relation.revoked",
            "membership.removed",
            "person.removed",
            "import.teams",
            "set.created",
            "package.created",
            "item.added",
            "item.removed",
        ]
    );
    let changed = &changes[3].1;
    assert_eq!(changed.actor, "alice");
    assert_eq!(changed.namespace, "teams");
    assert_eq!(changed.team.as_deref(), Some("ubuntu"));
    assert_eq!(changed.member.as_deref(), Some("bob"));
    assert_eq!(
        changed.before,
        Some(EdgeState {
            role: Some(Role::Member),
            expires: None
        })
    );
    assert_eq!(
        changed.after,
        Some(EdgeState {
            role: Some(Role::Admin),
            expires: Some(now + 100)
        })
    );
    assert!(changed.time_us > 1_700_000_000_000_000);
    let import = &changes[8].1;
    assert_eq!((import.nodes, import.edges), (Some(3), Some(2)));
    let item = &changes[11].1;
    assert_eq!(
        (
            item.set.as_deref(),
            item.item.as_deref(),
            item.actor.as_str()
        ),
        (Some("desktop"), Some("gedit"), "erin")
    );

    // Stored binary; shown as JSON with the envelope every event of the directory shares.
    let raw = store.change_log().read(3, 1).unwrap();
    assert_eq!(raw[0].1[0], 1, "version 1 of the binary form");
    let change = graphdb::Change::from_payload(&raw[0].1).unwrap();
    assert_eq!(&change, &changes[3].1);
    let json = serde_json::to_value(&change).unwrap();
    assert_eq!(json["kind"], "membership.changed");
    assert_eq!(json["actor"], "alice");
    assert_eq!(json["team"], "ubuntu");
    assert_eq!(json["after"]["role"], "admin");
    assert!(json["time_us"].is_i64());
    assert!(
        json.get("person").is_none(),
        "absent fields are left out: {json}"
    );

    // Refused writes record nothing.
    assert!(teams
        .put_member("kernel", "kernel", &EdgeKind::named("member"), None)
        .is_err());
    assert_eq!(store.change_log().head(), 13);
}

pub fn histories_of_teams_and_persons(fx: Fixture) {
    let store = fx.open();
    let teams = Teams::open(&store).unwrap();
    let admin = teams.acting_as("alice");
    admin
        .put_member("ubuntu", "bob", &EdgeKind::named("member"), None)
        .unwrap(); // 1 team, 2 bob, 3 membership
    admin
        .put_member("kernel", "carol", &EdgeKind::named("member"), None)
        .unwrap(); // 4, 5, 6
    let bob = teams.acting_as("bob");
    bob.set_membership("kernel", "ubuntu", Role::Member, None)
        .unwrap(); // 7: done by bob, to kernel and ubuntu
    admin.remove_membership("ubuntu", "bob").unwrap(); // 8

    let revisions =
        |page: graphdb::HistoryPage| -> Vec<u64> { page.changes.iter().map(|(r, _)| *r).collect() };
    assert_eq!(
        revisions(store.team_history("ubuntu", u64::MAX, 10).unwrap()),
        [8, 7, 3, 1]
    );
    assert_eq!(
        revisions(store.team_history("kernel", u64::MAX, 10).unwrap()),
        [7, 6, 4]
    );
    // Bob: what was done to him and what he did.
    let page = store.person_history("bob", u64::MAX, 3).unwrap();
    assert_eq!(page.next, Some(3));
    assert_eq!(revisions(page), [8, 7, 3]);
    let page = store.person_history("bob", 3, 3).unwrap();
    assert_eq!(page.next, None);
    assert_eq!(revisions(page), [2]);
    // Alice only acted.
    assert_eq!(
        revisions(store.person_history("alice", u64::MAX, 100).unwrap()),
        [8, 6, 5, 4, 3, 2, 1]
    );
    assert!(store
        .person_history("nobody", u64::MAX, 10)
        .unwrap()
        .changes
        .is_empty());
}

pub fn pruning_keeps_the_newest_and_refuses_pruned_reads(fx: Fixture) {
    let store = fx.open();
    let teams = Teams::open(&store).unwrap();
    for p in ["a", "b", "c"] {
        teams.add_person(p).unwrap();
    }
    let cut = graphdb::changes::now_us() + 1;
    std::thread::sleep(std::time::Duration::from_millis(2));
    teams.add_person("d").unwrap();
    assert_eq!(store.prune_changes_before(0).unwrap(), 0);
    assert_eq!(store.prune_changes_before(cut).unwrap(), 3);
    assert!(matches!(
        store.changes(1, 10),
        Err(Error::Feed(engine::FeedError::Compacted {
            after: 1,
            oldest: 4
        }))
    ));
    assert_eq!(
        kinds(&store.changes(3, 10).unwrap().changes),
        ["person.created"]
    );
    // Never the newest, so the head survives a reopen.
    assert_eq!(store.prune_changes_before(i64::MAX).unwrap(), 0);
    // The default retention (400 days) keeps everything recent.
    assert_eq!(store.prune_changes().unwrap(), 0);
    // History keys went with their events.
    assert_eq!(store.person_history("a", u64::MAX, 10).unwrap().changes, []);
    assert!(matches!(
        store.changes(99, 10),
        Err(Error::Feed(engine::FeedError::BeyondHead {
            after: 99,
            head: 4
        }))
    ));
}

pub fn revisions_continue_after_reopen(fx: Fixture) {
    {
        let store = fx.open();
        let teams = Teams::open(&store).unwrap();
        teams.add_team("t").unwrap();
        teams.add_person("p").unwrap();
    }
    let store = fx.open();
    assert_eq!(store.change_log().head(), 2);
    let teams = Teams::open(&store).unwrap();
    assert_eq!(
        teams.set_membership("t", "p", Role::Member, None).unwrap(),
        3
    );
    assert_replay_reproduces(&store, fx.clock.clone());
}

/// One write of the replay property's sequences.
#[derive(Clone, Debug)]
pub enum Op {
    Put(usize, usize, usize, bool, Option<i64>),
    Set(usize, usize, bool, Option<i64>),
    Unset(usize, usize),
    Grant(usize, usize, Option<i64>),
    Revoke(usize, usize),
    Remove(usize),
    AddPerson(usize),
    PutItem(usize, usize, bool),
    Take(usize, usize),
    RemoveItem(usize),
    Advance(i64),
}

const NAMES: usize = 6;

fn name(i: usize) -> String {
    // Names 0-2 are usually teams, 3-5 usually persons; put_member may make either.
    format!("n{i}")
}

pub fn op() -> impl Strategy<Value = Op> {
    let i = || 0..NAMES;
    let expiry = prop_oneof![3 => Just(None), 1 => (-3i64..6).prop_map(Some)];
    prop_oneof![
        4 => (0..3usize, i(), i(), any::<bool>(), expiry.clone())
            .prop_map(|(a, t, m, admin, e)| Op::Put(a, t, m, admin, e)),
        3 => (i(), i(), any::<bool>(), expiry.clone()).prop_map(|(t, m, a, e)| Op::Set(t, m, a, e)),
        2 => (i(), i()).prop_map(|(t, m)| Op::Unset(t, m)),
        2 => (i(), i(), expiry).prop_map(|(t, h, e)| Op::Grant(t, h, e)),
        1 => (i(), i()).prop_map(|(t, h)| Op::Revoke(t, h)),
        1 => i().prop_map(Op::Remove),
        1 => i().prop_map(Op::AddPerson),
        3 => (i(), i(), any::<bool>()).prop_map(|(s, x, set)| Op::PutItem(s, x, set)),
        1 => (i(), i()).prop_map(|(s, x)| Op::Take(s, x)),
        1 => i().prop_map(Op::RemoveItem),
        1 => (1i64..4).prop_map(Op::Advance),
    ]
}

/// Applies the operations (refusals are part of the game: they must record nothing), checks
/// that each write answered the revision of its last event, then replays the feed.
fn replay_property(ops: &[Op]) -> Result<(), TestCaseError> {
    let fx = Fixture::new(engine::Backend::Memory);
    let store = fx.open();
    run_ops(&store, &fx.clock, fx.clock.now_seconds(), ops)?;
    assert_replay_reproduces(&store, fx.clock.clone());
    Ok(())
}

/// Applies `ops` to `store` (expiries relative to `now`, `clock` moved by `Op::Advance`) and
/// checks that each write answered the revision of its last event, and that a refusal
/// recorded nothing.
pub fn run_ops(
    store: &GraphStore,
    clock: &ManualClock,
    now: i64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let actors = ["alice", "bob", "carol"];
    let teams = Teams::open(store).unwrap();
    let sets = PackageSets::open(store).unwrap().acting_as("dave");
    for op in ops {
        let head = store.change_log().head();
        let result: graphdb::Result<Option<u64>> = match op.clone() {
            Op::Put(actor, t, m, admin, e) => {
                let kind = if admin { "admin" } else { "member" };
                teams
                    .acting_as(actors[actor])
                    .put_member(
                        &name(t),
                        &name(m),
                        &EdgeKind::named(kind),
                        e.map(|o| now + o),
                    )
                    .map(Some)
            }
            Op::Set(t, m, admin, e) => {
                let role = if admin { Role::Admin } else { Role::Member };
                teams
                    .set_membership(&name(t), &name(m), role, e.map(|o| now + o))
                    .map(Some)
            }
            Op::Unset(t, m) => teams.remove_membership(&name(t), &name(m)),
            Op::Grant(t, h, e) => teams
                .grant(&name(h), "audits", &name(t), e.map(|o| now + o))
                .map(Some),
            Op::Revoke(t, h) => teams.revoke(&name(h), "audits", &name(t)),
            Op::Remove(x) => teams.remove(&name(x)),
            Op::AddPerson(x) => teams.add_person(&name(x)).map(Some),
            Op::PutItem(s, x, set) => {
                let item = if set { SetItem::Set } else { SetItem::Package };
                sets.put_item(&name(s), &name(x), item).map(Some)
            }
            Op::Take(s, x) => sets.take(&name(s), &name(x)),
            Op::RemoveItem(x) => sets.remove(&name(x)),
            Op::Advance(s) => {
                clock.set_seconds(clock.now_seconds() + s);
                Ok(None)
            }
        };
        let after = store.change_log().head();
        match result {
            Ok(Some(revision)) => prop_assert_eq!(revision, after, "{:?}", op),
            Ok(None) | Err(_) => prop_assert_eq!(head, after, "{:?} recorded an event", op),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_feed_reproduces_the_store(ops in prop::collection::vec(op(), 1..60)) {
        replay_property(&ops)?;
    }
}

/// `record_changes(false)` (for measuring the feed's cost only): writes work and record
/// nothing; they answer the head.
#[test]
fn a_store_without_its_feed_records_nothing() {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let store = GraphStore::builder(engine)
        .record_changes(false)
        .open()
        .unwrap();
    let teams = Teams::open(&store).unwrap();
    assert_eq!(
        teams
            .put_member("t", "p", &EdgeKind::named("member"), None)
            .unwrap(),
        0
    );
    assert!(teams.is_member("p", "t").unwrap());
    assert_eq!(store.change_log().head(), 0);
    assert!(store.changes(0, 10).unwrap().changes.is_empty());
    // Switched on again, the next write records.
    store.set_record_changes(true);
    let revision = teams
        .put_member("t", "q", &EdgeKind::named("member"), None)
        .unwrap();
    assert_eq!(revision, 2, "person.created, membership.added");
}

/// Events stored as JSON (before 2026-12-05) are read beside the binary ones: in the feed,
/// in the histories, and by pruning, which reads their time.
#[test]
fn events_stored_as_json_by_earlier_builds_are_still_read() {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let history = engine.keyspace("history").unwrap();
    let store = GraphStore::open(engine).unwrap();
    let old = br#"{"kind":"team.created","time_us":1000,"actor":"alice","namespace":"teams","team":"ubuntu"}"#;
    let entry = engine::LogEntry::new(old.to_vec()).index(
        history,
        graphdb::changes::object_history_key("teams", "ubuntu"),
    );
    store
        .change_log()
        .commit(engine::WriteBatch::new(), vec![entry])
        .unwrap();
    let teams = Teams::open(&store).unwrap().acting_as("bob");
    teams.add_person("carol").unwrap();
    let changes = store.changes(0, 10).unwrap().changes;
    assert_eq!(kinds(&changes), ["team.created", "person.created"]);
    assert_eq!(
        (changes[0].1.actor.as_str(), changes[0].1.team.as_deref()),
        ("alice", Some("ubuntu"))
    );
    let history = store.team_history("ubuntu", u64::MAX, 10).unwrap();
    assert_eq!(history.changes.len(), 1);
    // The JSON event is older than everything else: pruning takes it, never the newest.
    assert_eq!(store.prune_changes_before(2000).unwrap(), 1);
    assert_eq!(
        kinds(&store.changes(1, 10).unwrap().changes),
        ["person.created"]
    );
}

/// The history keys are written by the change log's indexer after the write: a history read
/// right after a write finds it all the same, a crash before the indexing leaves histories
/// that are complete after the reopen, and the next write's indexer writes their keys.
#[test]
fn histories_are_complete_before_their_indexing_and_after_a_crash() {
    use engine::{Direction, Engine, FaultyEngine, ScanRange};
    let engine = Arc::new(FaultyEngine::new(graphdb::KEYSPACES));
    let history_keys = |engine: &dyn Engine| {
        let history = engine.keyspace("history").unwrap();
        let keys = engine.scan(history, ScanRange::all(), Direction::Forward);
        keys.unwrap().count()
    };
    let revisions = |page: graphdb::Result<graphdb::HistoryPage>| -> Vec<u64> {
        page.unwrap().changes.iter().map(|(r, _)| *r).collect()
    };
    {
        let store = GraphStore::open(Arc::clone(&engine) as Arc<dyn Engine>).unwrap();
        store.change_log().set_background_indexing(false);
        let teams = Teams::open(&store).unwrap().acting_as("alice");
        teams
            .put_member("ubuntu", "bob", &EdgeKind::named("member"), None)
            .unwrap(); // 1 team, 2 bob, 3 membership
        assert_eq!(history_keys(&*engine), 0);
        assert_eq!(
            revisions(store.team_history("ubuntu", u64::MAX, 10)),
            [3, 1]
        );
        assert_eq!(revisions(store.person_history("bob", u64::MAX, 10)), [3, 2]);
    }
    let crashed = Arc::new(engine.crash());
    let store = GraphStore::open(Arc::clone(&crashed) as Arc<dyn Engine>).unwrap();
    assert_eq!(store.change_log().indexed_through().unwrap(), 0);
    assert_eq!(
        revisions(store.team_history("ubuntu", u64::MAX, 10)),
        [3, 1]
    );
    assert_eq!(
        revisions(store.person_history("alice", u64::MAX, 10)),
        [3, 2, 1]
    );
    let teams = Teams::open(&store).unwrap().acting_as("alice");
    teams.remove_membership("ubuntu", "bob").unwrap(); // 4
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.change_log().indexed_through().unwrap() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the indexer did not catch up"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // One key per history prefix for the indexer's batch (revisions 1-4, the events of
    // before the crash too): the team's, bob's and alice's, the actor.
    assert_eq!(history_keys(&*crashed), 3);
    assert_eq!(
        revisions(store.team_history("ubuntu", u64::MAX, 10)),
        [4, 3, 1]
    );
    assert_eq!(
        revisions(store.person_history("bob", u64::MAX, 10)),
        [4, 3, 2]
    );
}
