// Test-only: the scenarios stamped out per backend, which share their fixtures.
//! The suite run on every backend.

use graphdb::import::{ImportError, LineProblem};
use graphdb::{Depth, Error, NamespaceKind, NodeKind, Role, SetFilter, TeamFilter};

use crate::support::Fixture;

const ACTOR: &str = graphdb::SYSTEM_ACTOR;

crate::backend_tests!(suite:
    nested_membership_and_queries,
    expiry_at_now,
    expiry_survives_reopen,
    cycle_is_rejected_with_its_path,
    removal_keeps_other_paths,
    relations_reach_team_members,
    pagination_by_name,
    node_removal,
    index_survives_reopen,
    import_export_round_trip,
    import_is_all_or_nothing,
    package_sets,
    general_namespace_accepts_cycles,
    rebuild_and_check,
    concurrent_synced_writers_all_land,
    put_member_and_put_item_are_one_command,
);

fn people(fx: &Fixture) -> graphdb::Teams {
    let store = fx.open();
    graphdb::Teams::open(&store).expect("teams")
}

pub fn nested_membership_and_queries(fx: Fixture) {
    let teams = people(&fx);
    for p in ["alice", "bob", "carol"] {
        teams.add_person(p).unwrap();
    }
    for t in ["ubuntu", "core", "desktop"] {
        teams.add_team(t).unwrap();
    }
    teams
        .set_membership("ubuntu", "core", Role::Member, None)
        .unwrap();
    teams
        .set_membership("ubuntu", "desktop", Role::Member, None)
        .unwrap();
    teams
        .set_membership("core", "alice", Role::Admin, None)
        .unwrap();
    teams
        .set_membership("desktop", "bob", Role::Member, None)
        .unwrap();
    teams
        .set_membership("ubuntu", "carol", Role::Member, None)
        .unwrap();

    assert!(teams.is_member("alice", "ubuntu").unwrap());
    assert!(teams.is_member("alice", "core").unwrap());
    assert!(!teams.is_member("alice", "desktop").unwrap());
    assert!(teams.is_member("core", "ubuntu").unwrap());
    assert!(!teams.is_member("ubuntu", "core").unwrap());

    let all = |depth, filter| {
        teams
            .members("ubuntu", depth, filter, None, 100)
            .unwrap()
            .items
    };
    assert_eq!(
        all(Depth::Transitive, TeamFilter::Persons),
        ["alice", "bob", "carol"]
    );
    assert_eq!(
        all(Depth::Transitive, TeamFilter::Teams),
        ["core", "desktop"]
    );
    assert_eq!(
        all(Depth::Transitive, TeamFilter::All),
        ["alice", "bob", "carol", "core", "desktop"]
    );
    assert_eq!(all(Depth::Direct, TeamFilter::Persons), ["carol"]);
    assert_eq!(
        all(Depth::Direct, TeamFilter::All),
        ["carol", "core", "desktop"]
    );

    let teams_of = |p, depth| teams.teams_of(p, depth, None, 100).unwrap().items;
    assert_eq!(teams_of("alice", Depth::Transitive), ["core", "ubuntu"]);
    assert_eq!(teams_of("alice", Depth::Direct), ["core"]);
    assert_eq!(
        teams.path("bob", "ubuntu").unwrap().unwrap(),
        ["bob", "desktop", "ubuntu"]
    );
    assert_eq!(teams.path("bob", "core").unwrap(), None);
    let ids = teams.team_ids_of("alice", Depth::Transitive).unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(teams.view().id("ubuntu").unwrap().0));
    assert_eq!(teams.kind("alice"), Some(NodeKind::Leaf));
    assert_eq!(teams.kind("core"), Some(NodeKind::Group));
    assert_eq!(teams.kind("nobody"), None);
    assert_eq!(
        teams.membership("core", "alice").unwrap(),
        Some((Role::Admin, None))
    );
    assert_eq!(teams.membership("core", "bob").unwrap(), None);

    // A person cannot have members; unknown names are errors.
    let err = teams
        .set_membership("alice", "bob", Role::Member, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongKind {
                found: NodeKind::Leaf,
                ..
            }
        ),
        "{err}"
    );
    let err = teams.is_member("nobody", "ubuntu").unwrap_err();
    assert!(
        matches!(err, Error::UnknownNode { ref name, .. } if name == "nobody"),
        "{err}"
    );
    let err = teams.add_team("alice").unwrap_err();
    assert!(matches!(err, Error::WrongKind { .. }), "{err}");
    assert_eq!(
        teams.view().membership("alice", "core").unwrap(),
        Some((Role::Admin, None))
    );

    // Changing the role keeps the membership.
    teams
        .set_membership("core", "alice", Role::Member, Some(2_000_000))
        .unwrap();
    assert!(teams.is_member("alice", "ubuntu").unwrap());
    assert_eq!(
        teams.view().membership("alice", "core").unwrap(),
        Some((Role::Member, Some(2_000_000)))
    );
    assert!(teams.check().is_clean());
}

pub fn expiry_at_now(fx: Fixture) {
    let teams = people(&fx);
    let now = 1_000_000;
    fx.clock.set_seconds(now);
    teams.add_person("p").unwrap();
    teams.add_person("q").unwrap();
    teams.add_team("outer").unwrap();
    teams.add_team("inner").unwrap();
    teams
        .set_membership("outer", "inner", Role::Member, Some(now + 10))
        .unwrap();
    teams
        .set_membership("inner", "p", Role::Member, Some(now + 5))
        .unwrap();
    teams
        .set_membership("inner", "q", Role::Member, None)
        .unwrap();
    // An edge that expires exactly now never counts.
    teams.add_person("r").unwrap();
    teams
        .set_membership("inner", "r", Role::Member, Some(now))
        .unwrap();
    assert!(!teams.is_member("r", "inner").unwrap());
    assert_eq!(
        teams.view().membership("r", "inner").unwrap(),
        Some((Role::Member, Some(now)))
    );

    fx.clock.set_seconds(now + 4);
    assert!(teams.is_member("p", "outer").unwrap());
    fx.clock.set_seconds(now + 5); // p's membership expires at this very second
    assert!(!teams.is_member("p", "inner").unwrap());
    assert!(!teams.is_member("p", "outer").unwrap());
    assert!(teams.is_member("q", "outer").unwrap());
    assert_eq!(
        teams
            .members("outer", Depth::Transitive, TeamFilter::Persons, None, 10)
            .unwrap()
            .items,
        ["q"]
    );
    fx.clock.set_seconds(now + 10);
    assert!(!teams.is_member("q", "outer").unwrap());
    assert!(teams.is_member("q", "inner").unwrap());
    assert!(teams.check().is_clean());

    // Extending an expired membership brings it back.
    teams
        .set_membership("inner", "p", Role::Member, Some(now + 100))
        .unwrap();
    assert!(teams.is_member("p", "inner").unwrap());
    fx.clock.set_seconds(now + 100);
    assert!(!teams.is_member("p", "inner").unwrap());
    assert!(teams.check().is_clean());
}

pub fn expiry_survives_reopen(fx: Fixture) {
    let now = 1_000_000;
    fx.clock.set_seconds(now);
    {
        let teams = people(&fx);
        teams.add_person("p").unwrap();
        teams.add_team("t").unwrap();
        teams.add_team("u").unwrap();
        teams.set_membership("u", "t", Role::Member, None).unwrap();
        teams
            .set_membership("t", "p", Role::Member, Some(now + 10))
            .unwrap();
        assert!(teams.is_member("p", "u").unwrap());
    }
    // Closed while the edge was live; reopened after it expired.
    fx.clock.set_seconds(now + 10);
    let teams = people(&fx);
    assert!(!teams.is_member("p", "u").unwrap());
    assert!(teams.check().is_clean());
    // A write persists the expiry; reopen once more before it could be reprocessed.
    teams.add_person("z").unwrap();
    drop(teams);
    let teams = people(&fx);
    assert!(!teams.is_member("p", "t").unwrap());
    assert!(teams.check().is_clean());
}

pub fn cycle_is_rejected_with_its_path(fx: Fixture) {
    let teams = people(&fx);
    for t in ["a", "b", "c"] {
        teams.add_team(t).unwrap();
    }
    teams.set_membership("a", "b", Role::Member, None).unwrap(); // b in a
    teams.set_membership("b", "c", Role::Member, None).unwrap(); // c in b
    let err = teams
        .set_membership("c", "a", Role::Member, None)
        .unwrap_err();
    match &err {
        Error::Cycle {
            cycle,
            member,
            group,
            ..
        } => {
            assert_eq!(member, "a");
            assert_eq!(group, "c");
            assert_eq!(cycle, &["c", "b", "a", "c"]);
        }
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(err.to_string().contains("c -> b -> a -> c"), "{err}");
    let err = teams
        .set_membership("a", "a", Role::Member, None)
        .unwrap_err();
    assert!(
        matches!(err, Error::Cycle { ref cycle, .. } if cycle == &["a", "a"]),
        "{err}"
    );
    assert!(!teams.is_member("a", "c").unwrap());
    // An expired edge closes no cycle.
    teams
        .set_membership("c", "a", Role::Member, Some(1))
        .unwrap();
    assert!(!teams.is_member("a", "c").unwrap());
    // ... until it is extended.
    let err = teams
        .set_membership("c", "a", Role::Member, None)
        .unwrap_err();
    assert!(matches!(err, Error::Cycle { .. }), "{err}");
    assert!(teams.check().is_clean());
}

pub fn removal_keeps_other_paths(fx: Fixture) {
    let teams = people(&fx);
    teams.add_person("p").unwrap();
    for t in ["top", "left", "right"] {
        teams.add_team(t).unwrap();
    }
    teams
        .set_membership("top", "left", Role::Member, None)
        .unwrap();
    teams
        .set_membership("top", "right", Role::Member, None)
        .unwrap();
    teams
        .set_membership("left", "p", Role::Member, None)
        .unwrap();
    teams
        .set_membership("right", "p", Role::Member, None)
        .unwrap();
    teams
        .set_membership("top", "p", Role::Member, None)
        .unwrap();
    assert!(teams.remove_membership("left", "p").unwrap().is_some());
    assert!(teams.is_member("p", "top").unwrap());
    assert!(teams.remove_membership("top", "p").unwrap().is_some());
    assert!(teams.is_member("p", "top").unwrap());
    assert!(teams.remove_membership("top", "right").unwrap().is_some());
    assert!(!teams.is_member("p", "top").unwrap());
    assert!(teams.is_member("p", "right").unwrap());
    assert!(teams.remove_membership("top", "right").unwrap().is_none());
    assert!(teams.check().is_clean());
}

pub fn relations_reach_team_members(fx: Fixture) {
    let teams = people(&fx);
    for p in ["alice", "bob", "eve"] {
        teams.add_person(p).unwrap();
    }
    for t in ["auditors", "seniors", "project"] {
        teams.add_team(t).unwrap();
    }
    teams
        .set_membership("auditors", "seniors", Role::Member, None)
        .unwrap();
    teams
        .set_membership("seniors", "alice", Role::Member, None)
        .unwrap();
    teams.grant("auditors", "audits", "project", None).unwrap();
    teams
        .grant("bob", "audits", "project", Some(1_000_010))
        .unwrap();
    teams.grant("eve", "administers", "project", None).unwrap();

    assert!(teams.is_holder("alice", "audits", "project").unwrap());
    assert!(teams.is_holder("bob", "audits", "project").unwrap());
    assert!(!teams.is_holder("eve", "audits", "project").unwrap());
    assert!(teams.is_holder("eve", "administers", "project").unwrap());
    // A relation is not membership.
    assert!(!teams.is_member("alice", "project").unwrap());
    let holders = |f| {
        teams
            .holders("audits", "project", f, None, 10)
            .unwrap()
            .items
    };
    assert_eq!(holders(TeamFilter::Persons), ["alice", "bob"]);
    assert_eq!(
        holders(TeamFilter::All),
        ["alice", "auditors", "bob", "seniors"]
    );
    fx.clock.set_seconds(1_000_010);
    assert!(!teams.is_holder("bob", "audits", "project").unwrap());
    assert!(teams
        .revoke("auditors", "audits", "project")
        .unwrap()
        .is_some());
    assert!(!teams.is_holder("alice", "audits", "project").unwrap());
    let err = teams.grant("eve", "member", "project", None).unwrap_err();
    assert!(matches!(err, Error::InvalidRelation { .. }), "{err}");
}

pub fn pagination_by_name(fx: Fixture) {
    let teams = people(&fx);
    teams.add_team("big").unwrap();
    teams.add_team("sub").unwrap();
    teams
        .set_membership("big", "sub", Role::Member, None)
        .unwrap();
    let mut names = Vec::new();
    for i in 0..25 {
        // Ids in one order, names in another.
        let name = format!("user-{:02}", (i * 7) % 25);
        teams.add_person(&name).unwrap();
        let team = if i % 2 == 0 { "big" } else { "sub" };
        teams
            .set_membership(team, &name, Role::Member, None)
            .unwrap();
        names.push(name);
    }
    names.sort();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = teams
            .members(
                "big",
                Depth::Transitive,
                TeamFilter::Persons,
                after.as_deref(),
                10,
            )
            .unwrap();
        assert!(page.items.len() <= 10);
        got.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(got, names);
    let one = teams
        .members("big", Depth::Transitive, TeamFilter::Persons, None, 0)
        .unwrap();
    assert_eq!(one.items, [names[0].clone()]);
    assert_eq!(one.next.as_deref(), Some(names[0].as_str()));
    let last = teams
        .members(
            "big",
            Depth::Transitive,
            TeamFilter::Persons,
            Some(&names[24]),
            10,
        )
        .unwrap();
    assert_eq!(last, graphdb::Page::default());
}

pub fn node_removal(fx: Fixture) {
    let teams = people(&fx);
    teams.add_person("p").unwrap();
    teams.add_team("a").unwrap();
    teams.add_team("b").unwrap();
    teams.set_membership("a", "b", Role::Member, None).unwrap();
    teams.set_membership("b", "p", Role::Member, None).unwrap();
    teams.grant("b", "audits", "a", None).unwrap();
    assert!(teams.remove("b").unwrap().is_some());
    assert!(!teams.is_member("p", "a").unwrap());
    assert!(teams
        .teams_of("p", Depth::Transitive, None, 10)
        .unwrap()
        .items
        .is_empty());
    assert!(!teams.is_holder("p", "audits", "a").unwrap());
    assert!(matches!(
        teams.is_member("p", "b"),
        Err(Error::UnknownNode { .. })
    ));
    assert!(teams.remove("b").unwrap().is_none());
    // The name can be used again, as a person this time.
    teams.add_person("b").unwrap();
    assert!(!teams.is_member("b", "a").unwrap());
    assert!(teams.check().is_clean());
    drop(teams);
    let teams = people(&fx);
    assert!(teams.namespace().edges().is_empty());
    assert!(teams.check().is_clean());
    assert_eq!(
        teams.namespace().nodes(),
        [
            ("a".to_owned(), NodeKind::Group),
            ("b".to_owned(), NodeKind::Leaf),
            ("p".to_owned(), NodeKind::Leaf)
        ]
    );
}

pub fn index_survives_reopen(fx: Fixture) {
    {
        let teams = people(&fx);
        teams.add_person("p").unwrap();
        for t in ["a", "b", "c"] {
            teams.add_team(t).unwrap();
        }
        teams.set_membership("a", "b", Role::Member, None).unwrap();
        teams.set_membership("b", "c", Role::Member, None).unwrap();
        teams.set_membership("c", "p", Role::Admin, None).unwrap();
        teams.remove_membership("a", "b").unwrap();
        teams.set_membership("a", "c", Role::Member, None).unwrap();
    }
    let teams = people(&fx);
    assert!(teams.is_member("p", "a").unwrap());
    assert!(teams.is_member("p", "b").unwrap());
    assert!(!teams.is_member("b", "a").unwrap());
    assert_eq!(teams.stats().pairs, 5); // p in a, b, c; c in a, b
    assert!(teams.check().is_clean());
}

pub fn import_export_round_trip(fx: Fixture) {
    let tsv = "team\tmember\trole\texpires\n\
               ubuntu\tcore\tmember\t\n\
               core\talice\tadmin\t2000000\n\
               core\tbob\tmember\t5\n\
               ubuntu\tcarol\taudits\t\n\
               empty\t\t\t\n\
               \tloner\t\t\n";
    let teams = people(&fx);
    let summary = teams.import_tsv(tsv.as_bytes(), None).unwrap();
    assert_eq!(summary.edges, 4);
    assert!(teams.is_member("alice", "ubuntu").unwrap());
    assert!(!teams.is_member("bob", "core").unwrap()); // expired long ago
    assert!(teams.is_holder("carol", "audits", "ubuntu").unwrap());
    assert!(!teams.is_member("carol", "ubuntu").unwrap());
    assert_eq!(
        teams.view().kind(teams.view().id("empty").unwrap()),
        Some(NodeKind::Group)
    );
    let mut out = Vec::new();
    teams.export_tsv(&mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("team\tmember\trole\texpires\n"), "{out}");
    assert!(out.contains("core\tbob\tmember\t5\n"), "{out}");
    assert!(out.contains("\tloner\t\t\n"), "{out}");
    assert!(out.contains("empty\t\t\t\n"), "{out}");

    // Into a fresh store, and out again: the same file.
    let fx2 = Fixture::new(fx.backend);
    let teams2 = people(&fx2);
    teams2.import_tsv(out.as_bytes(), None).unwrap();
    let mut again = Vec::new();
    teams2.export_tsv(&mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), out);
    assert!(teams2.check().is_clean());
}

pub fn import_is_all_or_nothing(fx: Fixture) {
    let teams = people(&fx);
    let bad = "team\tmember\trole\texpires\n\
               a\tp\tmember\t\n\
               b\tq\tmember\tsoon\n";
    let err = teams.import_tsv(bad.as_bytes(), None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Import(ImportError::Line {
                line: 3,
                problem: LineProblem::BadExpiry { .. }
            })
        ),
        "{err}"
    );
    assert!(teams.namespace().nodes().is_empty());
    let cyclic = "team\tmember\trole\texpires\n\
                  a\tb\tmember\t\n\
                  b\tc\tmember\t\n\
                  c\ta\tmember\t\n\
                  a\tp\tmember\t\n";
    let err = teams.import_tsv(cyclic.as_bytes(), None).unwrap_err();
    match &err {
        Error::Cycle { cycle, .. } => {
            assert_eq!(cycle.len(), 4);
            assert_eq!(cycle.first(), cycle.last());
        }
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(teams.namespace().nodes().is_empty());
    assert!(teams.namespace().edges().is_empty());
    drop(teams);
    let teams = people(&fx);
    assert!(teams.namespace().nodes().is_empty());
}

pub fn package_sets(fx: Fixture) {
    let store = fx.open();
    let sets = graphdb::PackageSets::open(&store).unwrap();
    let tsv = "set\titem\ttype\n\
               desktop\tgnome\tset\n\
               gnome\tgedit\tpackage\n\
               gnome\tnautilus\tpackage\n\
               desktop\tfirefox\tpackage\n\
               server\t\t\n\
               \tlonely\tpackage\n";
    sets.import_tsv(tsv.as_bytes(), None).unwrap();
    assert!(sets.is_in("gedit", "desktop").unwrap());
    assert!(!sets.is_in("gedit", "server").unwrap());
    assert_eq!(
        sets.items("desktop", Depth::Transitive, SetFilter::Packages, None, 10)
            .unwrap()
            .items,
        ["firefox", "gedit", "nautilus"]
    );
    assert_eq!(
        sets.items("desktop", Depth::Direct, SetFilter::All, None, 10)
            .unwrap()
            .items,
        ["firefox", "gnome"]
    );
    assert_eq!(
        sets.sets_of("gedit", Depth::Transitive, None, 10)
            .unwrap()
            .items,
        ["desktop", "gnome"]
    );
    assert_eq!(sets.package_ids("gnome", Depth::Direct).unwrap().len(), 2);
    sets.insert("server", "gedit").unwrap();
    assert!(sets.is_in("gedit", "server").unwrap());
    let err = sets.insert("gnome", "desktop").unwrap_err();
    assert!(matches!(err, Error::Cycle { .. }), "{err}");
    assert!(sets.take("gnome", "gedit").unwrap().is_some());
    assert!(!sets.is_in("gedit", "desktop").unwrap());
    let mut out = Vec::new();
    sets.export_tsv(&mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("\tlonely\tpackage\n"), "{out}");
    assert!(out.contains("desktop\tgnome\tset\n"), "{out}");
    assert!(sets.check().is_clean());
    // The two namespaces do not see each other.
    let teams = graphdb::Teams::open(&store).unwrap();
    assert!(matches!(
        teams.is_member("gedit", "gnome"),
        Err(Error::UnknownNode { .. })
    ));
}

pub fn general_namespace_accepts_cycles(fx: Fixture) {
    let store = fx.open();
    let ns = store.namespace("links", NamespaceKind::General).unwrap();
    for g in ["a", "b", "c", "d"] {
        ns.add_node(ACTOR, g, NodeKind::Group).unwrap();
    }
    ns.add_node(ACTOR, "x", NodeKind::Leaf).unwrap();
    ns.set_membership(ACTOR, "a", "b", Role::Member, None)
        .unwrap();
    ns.set_membership(ACTOR, "b", "c", Role::Member, None)
        .unwrap();
    ns.set_membership(ACTOR, "c", "a", Role::Member, None)
        .unwrap();
    ns.set_membership(ACTOR, "x", "a", Role::Member, None)
        .unwrap();
    ns.set_membership(ACTOR, "c", "d", Role::Member, None)
        .unwrap();
    let view = ns.view();
    for g in ["a", "b", "c", "d"] {
        assert!(view.is_member("x", g).unwrap(), "x in {g}");
    }
    assert!(view.is_member("a", "a").unwrap());
    assert!(!view.is_member("d", "a").unwrap());
    assert_eq!(view.path("a", "a").unwrap().unwrap(), ["a", "b", "c", "a"]);
    drop(view);
    ns.remove_membership(ACTOR, "b", "c").unwrap();
    let view = ns.view();
    assert!(!view.is_member("a", "a").unwrap());
    assert!(view.is_member("x", "b").unwrap());
    assert!(!view.is_member("x", "c").unwrap());
    drop(view);
    assert!(ns.check().is_clean());
    let err = store
        .namespace("links", NamespaceKind::Acyclic)
        .unwrap_err();
    assert!(matches!(err, Error::NamespaceKind { .. }), "{err}");
}

pub fn rebuild_and_check(fx: Fixture) {
    let teams = people(&fx);
    teams.add_person("p").unwrap();
    teams.add_team("a").unwrap();
    teams.add_team("b").unwrap();
    teams.set_membership("a", "b", Role::Member, None).unwrap();
    teams.set_membership("b", "p", Role::Member, None).unwrap();
    let before = teams.stats();
    teams.rebuild().unwrap();
    assert_eq!(teams.stats(), before);
    let report = teams.check();
    assert!(report.is_clean());
    assert_eq!(report.pairs, 3);
    assert_eq!(report.nodes, 3);
}

/// Many threads write memberships (teams) and insertions (package sets) with synced
/// durability at once, so their writes share group syncs; each writer checks its own writes as
/// soon as they are acknowledged, and after a reopen every acknowledged write is there.
pub fn concurrent_synced_writers_all_land(fx: Fixture) {
    const WRITERS: usize = 8;
    const WRITES: usize = 12;
    let person = |w: usize, i: usize| format!("w{w}-p{i}");
    let team = |w: usize, i: usize| format!("t{}", (w + i) % 4);
    {
        let store = fx.open();
        let teams = graphdb::Teams::open(&store).unwrap();
        let sets = graphdb::PackageSets::open(&store).unwrap();
        for t in 0..4 {
            teams.add_team(&format!("t{t}")).unwrap();
        }
        teams
            .set_membership("t0", "t1", Role::Member, None)
            .unwrap();
        sets.add_set("all").unwrap();
        std::thread::scope(|scope| {
            for w in 0..WRITERS {
                let (teams, sets) = (teams.clone(), sets.clone());
                scope.spawn(move || {
                    for i in 0..WRITES {
                        let p = person(w, i);
                        if w % 4 == 3 {
                            sets.add_package(&p).unwrap();
                            sets.insert("all", &p).unwrap();
                            assert!(sets.is_in(&p, "all").unwrap());
                        } else {
                            teams.add_person(&p).unwrap();
                            let role = if i % 2 == 0 {
                                Role::Member
                            } else {
                                Role::Admin
                            };
                            teams.set_membership(&team(w, i), &p, role, None).unwrap();
                            assert!(teams.is_member(&p, &team(w, i)).unwrap());
                            // Every third membership is removed again: removals land too.
                            if i % 3 == 2 {
                                assert!(teams
                                    .remove_membership(&team(w, i), &p)
                                    .unwrap()
                                    .is_some());
                            }
                        }
                    }
                });
            }
        });
    }
    let store = fx.open();
    let teams = graphdb::Teams::open(&store).unwrap();
    let sets = graphdb::PackageSets::open(&store).unwrap();
    for w in 0..WRITERS {
        for i in 0..WRITES {
            let p = person(w, i);
            if w % 4 == 3 {
                assert!(sets.is_in(&p, "all").unwrap(), "{p} in all");
            } else {
                let t = team(w, i);
                assert_eq!(teams.is_member(&p, &t).unwrap(), i % 3 != 2, "{p} in {t}");
                // t1 is nested in t0, so members of t1 are members of t0.
                assert_eq!(
                    teams.is_member(&p, "t0").unwrap(),
                    i % 3 != 2 && (t == "t0" || t == "t1"),
                    "{p} in t0 (directly in {t})"
                );
            }
        }
    }
    assert!(teams.check().is_clean(), "{:?}", teams.check());
    assert!(sets.check().is_clean(), "{:?}", sets.check());
}

pub fn put_member_and_put_item_are_one_command(fx: Fixture) {
    use graphdb::{EdgeKind, SetItem};
    let store = fx.open();
    let teams = graphdb::Teams::open(&store).unwrap();
    let member = EdgeKind::Membership(Role::Admin);
    // Both ends are created with the membership.
    teams
        .put_member("ubuntu", "alice", &member, Some(5_000_000))
        .unwrap();
    assert_eq!(teams.kind("ubuntu"), Some(NodeKind::Group));
    assert_eq!(teams.kind("alice"), Some(NodeKind::Leaf));
    assert_eq!(
        teams.membership("ubuntu", "alice").unwrap(),
        Some((Role::Admin, Some(5_000_000)))
    );
    // An existing team as the member, a relation, a changed role.
    teams
        .put_member("distro", "ubuntu", &EdgeKind::named("member"), None)
        .unwrap();
    assert!(teams.is_member("alice", "distro").unwrap());
    teams
        .put_member("distro", "bob", &EdgeKind::named("audits"), None)
        .unwrap();
    assert!(teams.is_holder("bob", "audits", "distro").unwrap());
    assert!(!teams.is_member("bob", "distro").unwrap());

    // Refusals create nothing.
    let refused = [
        ("alice", "carol", EdgeKind::named("member")),
        ("newteam", "newteam", EdgeKind::named("member")),
        ("newteam", "newteam", EdgeKind::named("audits")),
        ("ubuntu", "distro", EdgeKind::named("member")),
        ("newteam", "carol", EdgeKind::named("Bad relation")),
        ("newteam", "", EdgeKind::named("member")),
    ];
    for (team, member, kind) in &refused {
        let err = teams.put_member(team, member, kind, None).unwrap_err();
        match (*team, &err) {
            ("alice", Error::HasNoMembers { name, .. }) => assert_eq!(name, "alice"),
            ("newteam" | "ubuntu", Error::Cycle { .. })
            | ("newteam", Error::InvalidRelation { .. } | Error::InvalidName { .. }) => {}
            other => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!(teams.kind("carol"), None);
    assert_eq!(teams.kind("newteam"), None);
    assert_eq!(
        teams.membership("distro", "ubuntu").unwrap(),
        Some((Role::Member, None))
    );
    assert!(teams.check().is_clean());

    let sets = graphdb::PackageSets::open(&store).unwrap();
    sets.put_item("desktop", "gnome", SetItem::Set).unwrap();
    sets.put_item("gnome", "gedit", SetItem::Package).unwrap();
    assert!(sets.is_in("gedit", "desktop").unwrap());
    assert!(matches!(
        sets.put_item("gedit", "x", SetItem::Package).unwrap_err(),
        Error::HasNoMembers { .. }
    ));
    assert!(matches!(
        sets.put_item("desktop", "gedit", SetItem::Set).unwrap_err(),
        Error::WrongKind { .. }
    ));
    assert!(matches!(
        sets.put_item("s", "s", SetItem::Package).unwrap_err(),
        Error::WrongKind { .. }
    ));
    assert!(matches!(
        sets.put_item("gnome", "desktop", SetItem::Set).unwrap_err(),
        Error::Cycle { .. }
    ));
    assert_eq!(
        sets.view().id("x").or(sets.view().id("s")),
        None,
        "a refused put created a node"
    );
}
