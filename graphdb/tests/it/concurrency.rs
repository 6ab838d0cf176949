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
    let teams = store.teams().unwrap();
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
