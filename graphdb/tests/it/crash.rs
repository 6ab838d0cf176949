//! Crash recovery: the test re-runs itself as a child process whose threads write memberships
//! concurrently with synced durability (so the writes share group syncs) and report each
//! acknowledged write; the parent kills it with SIGKILL in the middle, reopens the RocksDB
//! store and checks that every acknowledged write is there and that the persisted index agrees
//! with a fresh BFS.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use engine::{Durability, EngineConfig};
use graphdb::{GraphStore, ManualClock, Role};

const DIR_VAR: &str = "GRAPHDB_CRASH_CHILD_DIR";
const TEAMS: usize = 8;
/// Concurrent writers in the child; each owns its persons, so their writes never conflict.
const WRITERS: u64 = 4;

fn open(dir: &str) -> GraphStore {
    let engine = EngineConfig::rocksdb(dir)
        .open(graphdb::KEYSPACES)
        .expect("open rocksdb");
    GraphStore::builder(engine)
        .clock(Arc::new(ManualClock::at_seconds(1_000)))
        .durability(Durability::Sync)
        .open()
        .expect("open store")
}

/// The child: nests teams in a chain, then its writers add, change and remove memberships
/// forever, each printing "ack <writer> <team> <person> <present>" after each acknowledged
/// write.
fn child(dir: &str) -> ! {
    let store = open(dir);
    let teams = graphdb::Teams::open(&store).expect("teams");
    for t in 0..TEAMS {
        teams.add_team(&format!("t{t}")).expect("team");
        if t > 0 {
            teams
                .set_membership(&format!("t{}", t - 1), &format!("t{t}"), Role::Member, None)
                .expect("nest");
        }
    }
    println!("ready");
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let teams = teams.clone();
            scope.spawn(move || {
                let mut i: u64 = 0;
                loop {
                    let (team, person) = op(writer, i);
                    teams.add_person(&person).expect("person");
                    let present = if i % 3 == 2 {
                        teams.remove_membership(&team, &person).expect("remove");
                        false
                    } else {
                        let role = if i % 2 == 0 {
                            Role::Member
                        } else {
                            Role::Admin
                        };
                        teams
                            .set_membership(&team, &person, role, None)
                            .expect("set");
                        true
                    };
                    // One `println!` locks stdout for the whole line.
                    println!("ack {writer} {team} {person} {present}");
                    i += 1;
                }
            });
        }
    });
    unreachable!("the writers never stop")
}

/// Kills the child if the parent panics before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The (team, person) pair of write number `i` of the child's writer `writer`.
fn op(writer: u64, i: u64) -> (String, String) {
    (
        format!("t{}", (i * 7 + writer) % TEAMS as u64),
        format!("w{writer}-p{}", i % 50),
    )
}

#[test]
fn sigkill_during_synced_writes_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(DIR_VAR) {
        child(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::sigkill_during_synced_writes_loses_nothing_acknowledged",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    // The last acknowledged state of each pair, and how many writes each writer and all of
    // them had acknowledged.
    let mut acked: HashMap<(String, String), bool> = HashMap::new();
    let mut per_writer = vec![0u64; WRITERS as usize];
    let mut count: u64 = 0;
    // Kill after a number of acknowledged writes that varies from run to run.
    let kill_after = 80 + u64::from(std::process::id() % 120);
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split(' ');
        if words.next() != Some("ack") {
            continue;
        }
        let (Some(writer), Some(team), Some(person), Some(present)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            break; // a line cut by the kill
        };
        let Ok(writer) = writer.parse::<usize>() else {
            break;
        };
        assert_eq!(
            op(writer as u64, per_writer[writer]),
            (team.to_owned(), person.to_owned())
        );
        per_writer[writer] += 1;
        acked.insert((team.to_owned(), person.to_owned()), present == "true");
        count += 1;
        if count == kill_after && !killed {
            child.0.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    child.0.wait().expect("reap child");
    assert!(killed, "the child stopped early after {count} writes");

    // Each writer's next write was in flight: it may or may not have reached the disk.
    let in_flight: Vec<(String, String)> = (0..WRITERS)
        .map(|w| op(w, per_writer[w as usize]))
        .collect();
    assert!(
        per_writer.iter().filter(|&&n| n > 0).count() > 1,
        "only one writer acknowledged anything: {per_writer:?}"
    );
    let store = open(&path);
    let teams = graphdb::Teams::open(&store).expect("teams");
    let view = teams.view();
    for ((team, person), present) in &acked {
        let stored = view
            .membership(person, team)
            .expect("acknowledged person exists");
        if !in_flight.contains(&(team.clone(), person.clone())) {
            assert_eq!(
                stored.is_some(),
                *present,
                "{person} in {team}: acknowledged {present}, stored {stored:?}"
            );
        }
        if stored.is_some() {
            assert!(view.is_member(person, "t0").expect("t0"));
        }
    }
    drop(view);
    let report = teams.check();
    assert!(report.is_clean(), "{:?}", report.differences);
}

const PUT_DIR_VAR: &str = "GRAPHDB_CRASH_PUT_CHILD_DIR";

/// Put number `i` of writer `w`: a new person into team `n{w}-{i / 3}` (new at every third
/// put), as a member or, every fifth put, as the holder of `audits`.
fn put_op(writer: u64, i: u64) -> (String, String, graphdb::EdgeKind) {
    let kind = if i % 5 == 4 {
        graphdb::EdgeKind::Relation("audits".to_owned())
    } else {
        graphdb::EdgeKind::Membership(Role::Member)
    };
    (
        format!("n{writer}-{}", i / 3),
        format!("w{writer}-q{i}"),
        kind,
    )
}

/// The child of the put test: its writers call `Teams::put_member` with names that do not
/// exist yet, forever, printing "ack <writer> <i>" after each acknowledged put.
fn put_child(dir: &str) -> ! {
    let store = open(dir);
    let teams = graphdb::Teams::open(&store).expect("teams");
    println!("ready");
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let teams = teams.clone();
            scope.spawn(move || {
                for i in 0.. {
                    let (team, person, kind) = put_op(writer, i);
                    teams.put_member(&team, &person, &kind, None).expect("put");
                    println!("ack {writer} {i}");
                }
            });
        }
    });
    unreachable!("the writers never stop")
}

/// A membership PUT is all or nothing: SIGKILL while four threads put members into teams that
/// do not exist yet; after reopening, every acknowledged put is whole, and no team or person
/// exists without the edge that the put creating it asked for.
#[test]
fn sigkill_during_membership_puts_leaves_no_half_put() {
    if let Ok(dir) = std::env::var(PUT_DIR_VAR) {
        put_child(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::sigkill_during_membership_puts_leaves_no_half_put",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PUT_DIR_VAR, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut per_writer = vec![0u64; WRITERS as usize];
    let kill_after = 60 + u64::from(std::process::id() % 100);
    let mut count = 0;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split(' ');
        if words.next() != Some("ack") {
            continue;
        }
        let (Some(Ok(writer)), Some(Ok(i))) = (
            words.next().map(str::parse::<usize>),
            words.next().map(str::parse::<u64>),
        ) else {
            break; // a line cut by the kill
        };
        assert_eq!(per_writer[writer], i);
        per_writer[writer] += 1;
        count += 1;
        if count == kill_after && !killed {
            child.0.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    child.0.wait().expect("reap child");
    assert!(killed, "the child stopped early after {count} puts");

    let store = open(&path);
    let teams = graphdb::Teams::open(&store).expect("teams");
    let edge_of = |team: &str, person: &str, kind: &graphdb::EdgeKind| -> bool {
        let view = teams.view();
        match kind {
            graphdb::EdgeKind::Membership(_) => {
                view.membership(person, team).expect("names").is_some()
            }
            graphdb::EdgeKind::Relation(r) => view
                .holders(r, team, graphdb::Filter::All, None, usize::MAX)
                .expect("team")
                .items
                .contains(&person.to_owned()),
        }
    };
    for writer in 0..WRITERS {
        let acked = per_writer[writer as usize];
        // The in-flight put (number `acked`) may or may not be there; later ones never are.
        for i in 0..=acked + 1 {
            let (team, person, kind) = put_op(writer, i);
            let person_exists = teams.kind(&person).is_some();
            if i < acked {
                assert!(person_exists, "acknowledged put {writer}/{i} lost");
            }
            if i > acked {
                assert!(!person_exists, "put {writer}/{i} was never made");
            }
            if person_exists {
                assert!(
                    edge_of(&team, &person, &kind),
                    "{person} exists without its edge to {team}"
                );
            }
        }
        // A team exists only with a person that a put of it brought.
        for k in 0..=(acked + 1) / 3 {
            let team = format!("n{writer}-{k}");
            if teams.kind(&team).is_some() {
                let brought =
                    (3 * k..3 * k + 3).any(|i| teams.kind(&put_op(writer, i).1).is_some());
                assert!(brought, "{team} exists without the put that created it");
            }
        }
    }
    let report = teams.check();
    assert!(report.is_clean(), "{:?}", report.differences);
    // No change without its event and no event without its change: the feed that survived
    // rebuilds exactly the store that survived.
    crate::feed::assert_replay_reproduces(&store, Arc::new(ManualClock::at_seconds(1_000)));
}
