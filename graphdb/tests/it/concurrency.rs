//! The handles are shareable across threads, and readers never see a half-applied write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use graphdb::{Depth, Filter, GraphStore, Role};

#[test]
fn readers_see_whole_writes() {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let store = GraphStore::open(engine).unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    // top > mid > leaf-team, persons in leaf-team; the writer moves mid in and out of top.
    for t in ["top", "mid", "low"] {
        teams.add_team(t).unwrap();
    }
    teams
        .set_membership("mid", "low", Role::Member, None)
        .unwrap();
    for i in 0..50 {
        let p = format!("p{i}");
        teams.add_person(&p).unwrap();
        teams.set_membership("low", &p, Role::Member, None).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let teams = teams.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = [0u32; 2];
                while !done.load(Ordering::SeqCst) {
                    let view = teams.view();
                    let members = view
                        .member_ids("top", Depth::Transitive, Filter::Leaves)
                        .unwrap();
                    // All or nothing: the 50 persons arrive and leave with one edge.
                    assert!(
                        members.is_empty() || members.len() == 50,
                        "{}",
                        members.len()
                    );
                    let p0 = view.is_member("p0", "top").unwrap();
                    assert_eq!(p0, !members.is_empty());
                    assert_eq!(view.path("p0", "top").unwrap().is_some(), p0);
                    seen[usize::from(p0)] += 1;
                }
                seen
            })
        })
        .collect();
    for _ in 0..200 {
        teams
            .set_membership("top", "mid", Role::Member, None)
            .unwrap();
        teams.remove_membership("top", "mid").unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let mut total = 0;
    for r in readers {
        let seen = r.join().expect("reader panicked");
        total += seen[0] + seen[1];
    }
    assert!(total > 0);
    assert!(teams.check().is_clean());
}

/// `try_view` answers as `view` does when the index is free, and never waits: not while a
/// reader-writer lock has a writer, and not when expiries are due (applying them is a write),
/// which `view` then applies.
#[test]
fn try_view_answers_without_waiting_or_defers() {
    let fx = crate::support::Fixture::new(engine::Backend::Memory);
    let teams = graphdb::Teams::open(&fx.open()).unwrap();
    let now = 1_000_000;
    fx.clock.set_seconds(now);
    teams.add_team("t").unwrap();
    teams.add_person("p").unwrap();
    teams
        .set_membership("t", "p", Role::Member, Some(now + 10))
        .unwrap();
    {
        let view = teams.try_view().expect("the index is free");
        assert!(view.is_member("p", "t").unwrap());
        assert_eq!(
            view.path("p", "t").unwrap(),
            Some(vec!["p".into(), "t".into()])
        );
        // A view is a read lock; another reader still gets one at once.
        assert!(teams.try_view().is_some());
    }
    // The membership is due to expire: only a view that may write answers.
    fx.clock.set_seconds(now + 10);
    assert!(teams.try_view().is_none());
    assert!(!teams.view().is_member("p", "t").unwrap());
    let view = teams.try_view().expect("expiries applied");
    assert!(!view.is_member("p", "t").unwrap());
    drop(view);
    // While a writer waits for the index (held here by a reader on another thread),
    // try_view steps aside instead of queueing behind it.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let reader = teams.clone();
        scope.spawn(move || {
            let _view = reader.view();
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        held_rx.recv().unwrap();
        let writer = teams.clone();
        let write = scope.spawn(move || writer.set_membership("t", "p", Role::Member, None));
        // The writer is blocked behind the reader; wait (a bounded while, on a slow machine)
        // until try_view sees it waiting. Linux's std RwLock lets no new reader pass a
        // waiting writer, so a blocking read here would queue until the reader lets go.
        let mut stepped_aside = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match teams.try_view() {
                None => {
                    stepped_aside = true;
                    break;
                }
                Some(view) => drop(view),
            }
            std::thread::yield_now();
        }
        release_tx.send(()).unwrap();
        write.join().unwrap().unwrap();
        assert!(stepped_aside, "try_view queued behind a waiting writer");
    });
    assert!(teams.try_view().unwrap().is_member("p", "t").unwrap());
}
