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
        let t = &g.teams[rng.gen_range(0..g.teams.len())];
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
