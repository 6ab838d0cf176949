//! A generated graph shaped like the real one, scaled down 20 times, imported on the memory
//! backend and checked against BFS over the generator's own edge list.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use graphdb::generate::{Generated, Member, Shape};
use graphdb::{Depth, GraphStore, ManualClock, TeamFilter};
use rand::{Rng, SeedableRng};

/// Upward adjacency of the generated graph over the edges live at `now`, keyed by names.
fn up_index(g: &Generated) -> HashMap<&str, Vec<&str>> {
    let mut up: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &g.edges {
        if e.expires.is_none_or(|x| x > g.now) {
            up.entry(g.member_name(e.member))
                .or_default()
                .push(&g.teams[e.team]);
        }
    }
    up
}

fn bfs<'a>(up: &HashMap<&'a str, Vec<&'a str>>, start: &'a str) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([start]);
    while let Some(x) = queue.pop_front() {
        for &g in up.get(x).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(g) {
                queue.push_back(g);
            }
        }
    }
    seen
}

#[test]
fn generated_graph_matches_bfs() {
    let shape = Shape::scaled(20);
    let g = Generated::new(&shape);
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let clock = Arc::new(ManualClock::at_seconds(g.now));
    let store = GraphStore::builder(engine.clone())
        .clock(clock)
        .open()
        .unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    let summary = teams.import_tsv(g.to_tsv().as_bytes(), None).unwrap();
    assert_eq!(summary.edges as usize, g.edges.len() + g.audits.len());

    let up = up_index(&g);
    // The special teams have exactly their generated sizes (no expiry inside them).
    let big = &g.teams[g.special_roots[0]];
    let big_persons = teams
        .member_ids(big, Depth::Transitive, TeamFilter::Persons)
        .unwrap();
    assert_eq!(big_persons.len() as usize, shape.special[0].0);
    let second = &g.teams[g.special_roots[1]];
    assert_eq!(
        teams
            .member_ids(second, Depth::Transitive, TeamFilter::Persons)
            .unwrap()
            .len() as usize,
        shape.special[1].0
    );
    let heavy = &g.persons[g.heavy_person];
    assert_eq!(
        teams
            .teams_of(heavy, Depth::Direct, None, 1000)
            .unwrap()
            .items
            .len(),
        shape.heavy_person_teams
    );

    // Sampled persons and teams against BFS.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let view = teams.view();
    for _ in 0..300 {
        let p = &g.persons[rng.gen_range(0..g.persons.len())];
        let mut expected: Vec<&str> = bfs(&up, p).into_iter().collect();
        expected.sort_unstable();
        let got = view
            .groups_of(p, Depth::Transitive, None, 10_000)
            .unwrap()
            .items;
        assert_eq!(got, expected, "teams of {p}");
        // The directory's teams-of: a person's probe sorted by name without a bitmap.
        let id = view.id(p).unwrap();
        let sorted: Vec<&str> = view
            .sorted_group_ids_of(id, Depth::Transitive)
            .into_iter()
            .map(|x| view.name(graphdb::NodeId(x)).unwrap())
            .collect();
        assert_eq!(sorted, expected, "sorted teams of {p}");
        let t = &g.teams[rng.gen_range(0..g.teams.len())];
        // A team's groups take the bitmap's way: the same order.
        let team = view.id(t).unwrap();
        assert_eq!(
            view.sorted_group_ids_of(team, Depth::Transitive),
            view.sort_by_name(&view.group_ids_of(team, Depth::Transitive)),
            "groups of {t}"
        );
        assert_eq!(
            view.is_member(p, t).unwrap(),
            expected.contains(&t.as_str())
        );
    }
    for _ in 0..30 {
        let t = &g.teams[rng.gen_range(0..g.teams.len())];
        let mut expected: Vec<&str> = g
            .persons
            .iter()
            .map(String::as_str)
            .filter(|p| up.contains_key(p) && bfs(&up, p).contains(t.as_str()))
            .collect();
        expected.sort_unstable();
        let got = view
            .members(t, Depth::Transitive, graphdb::Filter::Leaves, None, 100_000)
            .unwrap()
            .items;
        assert_eq!(got, expected, "members of {t}");
    }
    // Expired memberships are stored but do not count.
    let expired = g
        .edges
        .iter()
        .find(|e| e.expires.is_some_and(|x| x <= g.now) && matches!(e.member, Member::Person(_)))
        .expect("the shape has expired memberships");
    let (p, t) = (g.member_name(expired.member), &g.teams[expired.team]);
    assert!(view.membership(p, t).unwrap().is_some());
    assert_eq!(
        view.is_member(p, t).unwrap(),
        bfs(&up, p).contains(t.as_str())
    );
    drop(view);
    assert!(teams.check().is_clean());

    // Export, import into a fresh store, export again: the same text and the same index.
    let mut exported = Vec::new();
    teams.export_tsv(&mut exported).unwrap();
    let copy_store = GraphStore::builder(
        engine::EngineConfig::memory()
            .open(graphdb::KEYSPACES)
            .unwrap(),
    )
    .clock(Arc::new(ManualClock::at_seconds(g.now)))
    .open()
    .unwrap();
    let copy = graphdb::Teams::open(&copy_store).unwrap();
    copy.import_tsv(exported.as_slice(), None).unwrap();
    let mut again = Vec::new();
    copy.export_tsv(&mut again).unwrap();
    assert!(exported == again, "export of the re-import differs");
    assert_eq!(copy.stats().pairs, teams.stats().pairs);
    drop(copy);
    drop(copy_store);

    // Reopen: the persisted closure loads to the same index.
    let stats = teams.stats();
    drop(teams);
    drop(store);
    let store = GraphStore::builder(engine)
        .clock(Arc::new(ManualClock::at_seconds(g.now)))
        .open()
        .unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    assert_eq!(teams.stats(), stats);
    assert!(teams.check().is_clean());
}

/// A team with more persons below it than the size from which `desc` keeps a team's persons
/// (1,600, `State::big`) beside a small one, changed by every write path (join through a
/// subteam and directly, leave, nest and un-nest a team, expiry, node removal), then rebuilt
/// and reopened: the members, their kept sorted lists and `check()` stay exact throughout.
#[test]
fn a_big_team_keeps_its_members_exact_through_every_write() {
    let t0 = 1_800_000_000;
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .unwrap();
    let clock = Arc::new(ManualClock::at_seconds(t0));
    let store = GraphStore::builder(engine.clone())
        .clock(clock.clone())
        .open()
        .unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    // big <- sub-0..9 <- p-0..1999 (p-k in sub-(k % 10); every 97th until t0 + 10);
    // small <- s-0..49.
    let expiring = |p: usize| p % 97 == 0;
    let mut tsv = format!("{}\n", graphdb::import::TEAMS_HEADER);
    for s in 0..10 {
        tsv += &format!("big\tsub-{s}\tmember\t\n");
    }
    for p in 0..2000 {
        let expires = if expiring(p) {
            (t0 + 10).to_string()
        } else {
            String::new()
        };
        tsv += &format!("sub-{}\tp-{p}\tmember\t{expires}\n", p % 10);
    }
    for p in 0..50 {
        tsv += &format!("small\ts-{p}\tmember\t\n");
    }
    teams.import_tsv(tsv.as_bytes(), None).unwrap();
    // The big team's `desc` holds its persons (about 2 bytes each), the small ones' do not.
    assert!(teams.memory().closure_down > 3_000);
    let expect = |teams: &graphdb::Teams, team: &str, persons: usize| {
        let ids = teams
            .member_ids(team, Depth::Transitive, TeamFilter::Persons)
            .unwrap();
        assert_eq!(ids.len() as usize, persons, "persons of {team}");
        let listed = teams
            .members(team, Depth::Transitive, TeamFilter::Persons, None, 100_000)
            .unwrap()
            .items;
        assert_eq!(listed.len(), persons, "listed persons of {team}");
        assert!(teams.check().is_clean());
    };
    expect(&teams, "big", 2000);
    expect(&teams, "sub-3", 200);
    let role = graphdb::Role::Member;
    teams.add_person("q").unwrap();
    teams.set_membership("sub-3", "q", role, None).unwrap();
    expect(&teams, "big", 2001);
    teams.set_membership("big", "q", role, None).unwrap();
    teams.remove_membership("sub-3", "q").unwrap();
    expect(&teams, "big", 2001);
    expect(&teams, "sub-3", 200);
    teams.set_membership("big", "small", role, None).unwrap();
    expect(&teams, "big", 2051);
    teams.set_membership("small", "p-1", role, None).unwrap();
    expect(&teams, "big", 2051);
    expect(&teams, "small", 51);
    teams.remove_membership("big", "small").unwrap();
    expect(&teams, "big", 2001);
    clock.set_seconds(t0 + 20);
    let expired = (0..2000).filter(|&p| expiring(p)).count();
    expect(&teams, "big", 2001 - expired);
    let in_sub0 = (0..2000).filter(|&p| p % 10 == 0 && !expiring(p)).count();
    teams.remove("sub-0").unwrap();
    let left = 2001 - expired - in_sub0;
    expect(&teams, "big", left);
    teams.rebuild().unwrap();
    expect(&teams, "big", left);
    drop(teams);
    drop(store);
    let store = GraphStore::builder(engine).clock(clock).open().unwrap();
    let teams = graphdb::Teams::open(&store).unwrap();
    expect(&teams, "big", left);
    expect(&teams, "small", 51);
}
