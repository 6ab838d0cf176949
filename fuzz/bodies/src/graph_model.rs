//! The team graph against a plain BFS model: random node and membership writes (with
//! expiries), clock advances and crashes (a [`FaultyEngine`] keeping only what was synced),
//! checking each write's outcome, and after every step the is-member answers and transitive
//! member lists the step could change: those of the teams downstream of the edge written
//! (or of the node removed, or of the edges that expired), of every member. After a crash
//! and at the end everything is checked: every is-member answer, every member list, and the
//! store's own `check`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use engine::FaultyEngine;
use graphdb::{Clock, Depth, Error, GraphStore, ManualClock, Role, TeamFilter, Teams};

use crate::bytes::Bytes;

/// Names 0-3 are persons, 4-8 teams.
const NAMES: [&str; 9] = ["p0", "p1", "p2", "p3", "t0", "t1", "t2", "t3", "t4"];
const FIRST_TEAM: usize = 4;
const MAX_OPS: usize = 64;

#[derive(Default, Debug)]
struct Model {
    nodes: BTreeSet<usize>,
    /// (member, team) -> expiry.
    edges: BTreeMap<(usize, usize), Option<i64>>,
}

impl Model {
    fn active(expires: Option<i64>, now: i64) -> bool {
        expires.is_none_or(|e| e > now)
    }

    /// The teams whose transitive members a change to `node`'s memberships (as the member
    /// of an edge into `node`, or `node` itself removed) may change: `node` and the teams it
    /// reaches.
    fn downstream(&self, node: usize, now: i64) -> BTreeSet<usize> {
        let mut teams = self.reach(node, now);
        teams.insert(node);
        teams
    }

    /// The teams `member` reaches over active edges (not itself).
    fn reach(&self, member: usize, now: i64) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![member];
        while let Some(x) = todo.pop() {
            for (&(m, t), &e) in &self.edges {
                if m == x && Self::active(e, now) && seen.insert(t) {
                    todo.push(t);
                }
            }
        }
        seen
    }
}

fn open(engine: &Arc<FaultyEngine>, clock: &Arc<ManualClock>) -> (GraphStore, Teams) {
    let store = GraphStore::builder(Arc::clone(engine) as Arc<dyn engine::Engine>)
        .clock(Arc::clone(clock) as Arc<dyn graphdb::Clock>)
        .open()
        .expect("open graph store");
    // History keys are written on this thread (at clock advances and at the end), not by a
    // thread started per store and input.
    store.change_log().set_background_indexing(false);
    let teams = graphdb::Teams::open(&store).expect("teams");
    (store, teams)
}

/// What a step may have changed in the store's answers.
#[derive(Debug, Default)]
struct Scope {
    /// Teams whose transitive members may have changed (every member's is-member answer for
    /// them and their member list are read back).
    teams: BTreeSet<usize>,
    /// A node added or removed: its is-member answers (or "unknown") are read back.
    node: Option<usize>,
    /// Everything, and the store's `check` (after a crash, and at the end).
    everything: bool,
}

fn check_against(teams: &Teams, model: &Model, now: i64, scope: &Scope) {
    let all = scope.everything;
    let in_scope = |m: usize, t: usize| all || scope.teams.contains(&t) || scope.node == Some(m);
    // Each node's reach once per check, not once per (team, member) pair.
    let reach: BTreeMap<usize, BTreeSet<usize>> = model
        .nodes
        .iter()
        .map(|&m| (m, model.reach(m, now)))
        .collect();
    for &m in &model.nodes {
        for &t in model
            .nodes
            .iter()
            .filter(|&&t| t >= FIRST_TEAM && t != m && in_scope(m, t))
        {
            assert_eq!(
                teams.is_member(NAMES[m], NAMES[t]).unwrap(),
                reach[&m].contains(&t),
                "is {} in {} at {now}: {model:?}",
                NAMES[m],
                NAMES[t]
            );
        }
    }
    for &t in model
        .nodes
        .iter()
        .filter(|&&t| t >= FIRST_TEAM && (all || scope.teams.contains(&t)))
    {
        let expected: BTreeSet<&str> = model
            .nodes
            .iter()
            .filter(|&&m| m != t && reach[&m].contains(&t))
            .map(|&m| NAMES[m])
            .collect();
        let page = teams
            .members(NAMES[t], Depth::Transitive, TeamFilter::All, None, 100)
            .unwrap();
        let found: BTreeSet<&str> = page.items.iter().map(String::as_str).collect();
        assert_eq!(found, expected, "members of {}", NAMES[t]);
        assert_eq!(
            found.len(),
            page.items.len(),
            "duplicates in {:?}",
            page.items
        );
    }
    for name in NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| !model.nodes.contains(i) && (all || scope.node == Some(*i)))
    {
        assert!(matches!(
            teams.is_member(name.1, "t0"),
            Err(Error::UnknownNode { .. })
        ));
    }
    if all {
        let report = teams.check();
        assert!(report.is_clean(), "{report:?}");
    }
}

/// Ops: add or remove a node, set or remove a membership (expiring or not), advance the
/// clock, crash and reopen.
pub fn graph_model(input: &[u8]) {
    let mut bytes = Bytes::new(input);
    let clock = Arc::new(ManualClock::at_seconds(1_000));
    let mut engine = Arc::new(FaultyEngine::new(graphdb::KEYSPACES));
    let (mut store, mut teams) = open(&engine, &clock);
    let mut model = Model::default();
    let mut ops = 0;
    while !bytes.is_empty() && ops < MAX_OPS {
        ops += 1;
        let now = clock.now_seconds();
        let mut scope = Scope::default();
        match bytes.below(10) {
            0 | 1 => {
                let n = bytes.below(NAMES.len());
                if n < FIRST_TEAM {
                    teams.add_person(NAMES[n]).unwrap();
                } else {
                    teams.add_team(NAMES[n]).unwrap();
                }
                model.nodes.insert(n);
                scope.node = Some(n);
                scope.teams = model.downstream(n, now);
            }
            2..=4 => {
                let (m, t) = (bytes.below(NAMES.len()), bytes.below(NAMES.len()));
                let role = if bytes.bool() {
                    Role::Admin
                } else {
                    Role::Member
                };
                let expires = match bytes.below(4) {
                    0 => Some(now + i64::from(bytes.u8()) - 50),
                    _ => None,
                };
                let result = teams.set_membership(NAMES[t], NAMES[m], role, expires);
                let known = model.nodes.contains(&m) && model.nodes.contains(&t);
                let was_active = model
                    .edges
                    .get(&(m, t))
                    .is_some_and(|&e| Model::active(e, now));
                let cycle = Model::active(expires, now)
                    && !was_active
                    && (m == t || model.reach(t, now).contains(&m));
                // The teams downstream of the edge, before and after it changed.
                scope.teams = model.downstream(t, now);
                match result {
                    Ok(_) => {
                        assert!(known && t >= FIRST_TEAM && !cycle, "accepted {m}->{t}");
                        model.edges.insert((m, t), expires);
                        scope.teams.extend(model.downstream(t, now));
                    }
                    Err(Error::UnknownNode { .. }) => assert!(!known),
                    Err(Error::WrongKind { .. }) => assert!(known && t < FIRST_TEAM),
                    Err(Error::Cycle { cycle: names, .. }) => {
                        assert!(known && cycle, "refused {m}->{t} as a cycle {names:?}");
                        assert!(names.len() >= 2 && names.first() == names.last());
                    }
                    Err(other) => panic!("set {m}->{t}: {other}"),
                }
            }
            5 | 6 => {
                let (m, t) = (bytes.below(NAMES.len()), bytes.below(NAMES.len()));
                let known = model.nodes.contains(&m) && model.nodes.contains(&t);
                scope.teams = model.downstream(t, now);
                match teams.remove_membership(NAMES[t], NAMES[m]) {
                    Ok(existed) => {
                        assert!(known);
                        assert_eq!(existed.is_some(), model.edges.remove(&(m, t)).is_some());
                    }
                    Err(Error::UnknownNode { .. }) => assert!(!known),
                    Err(other) => panic!("remove {m}->{t}: {other}"),
                }
            }
            7 => {
                let n = bytes.below(NAMES.len());
                scope.node = Some(n);
                scope.teams = model.downstream(n, now);
                assert_eq!(
                    teams.remove(NAMES[n]).unwrap().is_some(),
                    model.nodes.remove(&n)
                );
                model.edges.retain(|&(m, t), _| m != n && t != n);
            }
            8 => {
                clock.advance(Duration::from_secs(u64::from(bytes.u8())));
                // Edges that expired meanwhile change the teams downstream of them.
                let later = clock.now_seconds();
                for (&(_, t), &e) in &model.edges {
                    if Model::active(e, now) != Model::active(e, later) {
                        scope.teams.extend(model.downstream(t, now));
                    }
                }
                // The history keys so far, written on this thread: a later crash finds the
                // indexer's mark here and the events after it still to index.
                store.change_log().index_pending().unwrap();
            }
            _ => {
                let crashed = Arc::new(engine.crash());
                drop(teams);
                drop(store);
                engine = crashed;
                (store, teams) = open(&engine, &clock);
                scope.everything = true;
            }
        }
        check_against(&teams, &model, clock.now_seconds(), &scope);
    }
    let everything = Scope {
        everything: true,
        ..Scope::default()
    };
    check_against(&teams, &model, clock.now_seconds(), &everything);
    store.change_log().index_pending().unwrap();
    check_replay(&store, &teams, &clock);
    drop(store);
}

/// The change feed: replaying it from revision 0 onto an empty store gives the same nodes,
/// edges and index (after crashes too: the feed holds exactly what survived).
fn check_replay(store: &GraphStore, teams: &Teams, clock: &Arc<ManualClock>) {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .expect("memory engine");
    let replica = GraphStore::builder(engine)
        .clock(Arc::clone(clock) as Arc<dyn graphdb::Clock>)
        .open()
        .expect("replica");
    replica.change_log().set_background_indexing(false);
    let mut after = 0;
    loop {
        let page = store.changes(after, 100).expect("feed");
        if page.next == after {
            break;
        }
        for (_, change) in &page.changes {
            assert!(replica.replay(change).expect("replay"), "{change:?}");
        }
        after = page.next;
    }
    let copy = graphdb::Teams::open(&replica).expect("replica teams");
    assert_eq!(copy.namespace().nodes(), teams.namespace().nodes());
    assert_eq!(copy.namespace().edges(), teams.namespace().edges());
    for (name, kind) in teams.namespace().nodes() {
        if kind == graphdb::NodeKind::Group {
            let members = |t: &Teams| {
                t.members(&name, Depth::Transitive, TeamFilter::All, None, usize::MAX)
                    .expect("members")
            };
            assert_eq!(members(&copy), members(teams), "members of {name}");
        }
    }
    assert!(copy.check().is_clean());
}
