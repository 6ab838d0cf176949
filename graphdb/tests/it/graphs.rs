//! General graphs ([`graphdb::Graph`]): every query against a plain BFS model after random
//! adds and removes of labelled edges on small graphs full of cycles, across reopens; TSV
//! round trips; bad input.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use graphdb::{Direction, Error, Graph, NamespaceKind, Traversal};
use proptest::prelude::*;

use crate::support::Fixture;

const LABELS: [&str; 3] = ["depends", "recommends", "contains"];

#[derive(Clone, Debug)]
enum Op {
    Put(usize, usize, Option<usize>),
    Remove(usize, usize),
    Reopen,
    /// Rebuild with the existing nodes whose bit is set as hubs (0: none, 0x7f: all).
    Hubs(u8),
    /// The edge, by a one-line import (the bulk path, with the hubs kept).
    Import(usize, usize, Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..7usize, 0..7usize, proptest::option::of(0..3usize))
            .prop_map(|(a, b, l)| Op::Put(a, b, l)),
        3 => (0..7usize, 0..7usize).prop_map(|(a, b)| Op::Remove(a, b)),
        1 => Just(Op::Reopen),
        1 => prop_oneof![Just(0u8), Just(0x7fu8), any::<u8>()].prop_map(Op::Hubs),
        1 => (0..7usize, 0..7usize, proptest::option::of(0..3usize))
            .prop_map(|(a, b, l)| Op::Import(a, b, l)),
    ]
}

fn node(i: usize) -> String {
    // Names not in creation order, so sorting by name is not sorting by id.
    format!("n{}", (i * 5) % 7)
}

/// The model: edges by (from, to) with their label.
#[derive(Default)]
struct Model {
    nodes: BTreeSet<String>,
    edges: BTreeMap<(String, String), Option<String>>,
}

impl Model {
    /// The nodes reachable from `x` over 1 to `depth` edges with one of `labels`.
    fn bfs(
        &self,
        x: &str,
        dir: Direction,
        labels: Option<&[&str]>,
        depth: Option<u32>,
    ) -> BTreeMap<String, u32> {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut queue = VecDeque::from([(x.to_owned(), 0u32)]);
        while let Some((at, d)) = queue.pop_front() {
            if depth.is_some_and(|m| d >= m) {
                continue;
            }
            for ((from, to), label) in &self.edges {
                let (here, there) = match dir {
                    Direction::Descendants => (from, to),
                    Direction::Ancestors => (to, from),
                };
                if *here != at {
                    continue;
                }
                if let Some(ls) = labels {
                    if !label.as_deref().is_some_and(|l| ls.contains(&l)) {
                        continue;
                    }
                }
                if !seen.contains_key(there) {
                    seen.insert(there.clone(), d + 1);
                    queue.push_back((there.clone(), d + 1));
                }
            }
        }
        seen
    }
}

fn all(
    g: &Graph,
    n: &str,
    dir: Direction,
    labels: Option<Vec<&str>>,
    depth: Option<u32>,
) -> Vec<String> {
    // Pages of 2, to exercise the cursor.
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = Traversal {
            labels: labels.clone(),
            depth,
            after: after.as_deref(),
            limit: 2,
        };
        let page = g.traverse(n, dir, &query).unwrap();
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

fn check(g: &Graph, model: &Model) -> Result<(), TestCaseError> {
    for a in &model.nodes {
        let down = model.bfs(a, Direction::Descendants, None, None);
        for b in &model.nodes {
            let reach = g.reachable(a, b, true).unwrap();
            prop_assert_eq!(reach.reachable, down.contains_key(b), "{} -> {}", a, b);
            if let Some(path) = reach.path {
                // A shortest path over stored edges.
                prop_assert_eq!(path.len() as u32 - 1, down[b], "path {:?}", path);
                prop_assert_eq!(&path[0], a);
                prop_assert_eq!(path.last().unwrap(), b);
                for w in path.windows(2) {
                    prop_assert!(model.edges.contains_key(&(w[0].clone(), w[1].clone())));
                }
            } else {
                prop_assert!(!reach.reachable);
            }
        }
        for dir in [Direction::Descendants, Direction::Ancestors] {
            for labels in [
                None,
                Some(vec!["depends"]),
                Some(vec!["recommends", "contains"]),
            ] {
                for depth in [None, Some(1), Some(2)] {
                    let expected: Vec<String> = model
                        .bfs(a, dir, labels.as_deref(), depth)
                        .into_keys()
                        .collect();
                    prop_assert_eq!(all(g, a, dir, labels.clone(), depth), expected);
                }
            }
        }
        let up = model.bfs(a, Direction::Ancestors, None, None);
        let component: Vec<String> = down
            .keys()
            .filter(|b| up.contains_key(*b))
            .cloned()
            .collect();
        let info = g.node(a).unwrap();
        prop_assert_eq!(&info.component, &component);
        let out: Vec<(String, Option<String>)> =
            info.out.into_iter().map(|e| (e.to, e.label)).collect();
        let expected: Vec<(String, Option<String>)> = model
            .edges
            .iter()
            .filter(|((f, _), _)| f == a)
            .map(|((_, t), l)| (t.clone(), l.clone()))
            .collect();
        prop_assert_eq!(out, expected);
        prop_assert_eq!(
            info.into.len(),
            model.edges.keys().filter(|(_, t)| t == a).count()
        );
    }
    prop_assert!(g.namespace().check().is_clean());
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let fx = Fixture::new(engine::Backend::Memory);
    let mut store = fx.open();
    let mut g = store.create_graph("deps", NamespaceKind::General).unwrap();
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Put(a, b, l) | Op::Import(a, b, l) => {
                let label = l.map(|l| LABELS[l]);
                if matches!(op, Op::Import(..)) {
                    let line = format!(
                        "from\tto\tlabel\n{}\t{}\t{}\n",
                        node(a),
                        node(b),
                        label.unwrap_or("")
                    );
                    g.import_tsv(line.as_bytes(), None).unwrap();
                } else {
                    g.put_edge(&node(a), &node(b), label).unwrap();
                }
                model.nodes.insert(node(a));
                model.nodes.insert(node(b));
                model
                    .edges
                    .insert((node(a), node(b)), label.map(str::to_owned));
            }
            Op::Remove(a, b) => match g.remove_edge(&node(a), &node(b)) {
                Ok(removed) => {
                    let was = model.edges.remove(&(node(a), node(b)));
                    prop_assert_eq!(removed.is_some(), was.is_some());
                }
                Err(Error::UnknownNode { .. }) => {
                    prop_assert!(
                        !model.nodes.contains(&node(a)) || !model.nodes.contains(&node(b))
                    );
                }
                Err(e) => panic!("{e}"),
            },
            Op::Hubs(mask) => {
                let hubs: Vec<&str> = model
                    .nodes
                    .iter()
                    .filter(|n| mask & (1 << n[1..].parse::<u8>().unwrap()) != 0)
                    .map(String::as_str)
                    .collect();
                g.namespace().rebuild_with_hubs(&hubs).unwrap();
                let mut expected: Vec<String> = hubs.iter().map(|h| (*h).to_owned()).collect();
                expected.sort_unstable();
                prop_assert_eq!(g.namespace().hubs(), expected);
            }
            Op::Reopen => {
                drop(g);
                drop(store);
                store = fx.open();
                g = store.graph("deps").unwrap().unwrap();
            }
        }
        check(&g, &model)?;
    }
    // Export, import into a fresh graph, export again: the same text.
    let mut text = Vec::new();
    g.export_tsv(&mut text).unwrap();
    let copy = store.create_graph("copy", NamespaceKind::General).unwrap();
    copy.import_tsv(text.as_slice(), None).unwrap();
    check(&copy, &model)?;
    let mut again = Vec::new();
    copy.export_tsv(&mut again).unwrap();
    prop_assert_eq!(
        String::from_utf8(again).unwrap(),
        String::from_utf8(text).unwrap()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn general_graph_matches_bfs(ops in proptest::collection::vec(op(), 1..30)) {
        run(&ops)?;
    }
}

/// Merges and splits of components, step by step against the model: two cycles joined by a
/// chain merge into one component when an edge closes the way back, split again when it goes,
/// and a component splits when an edge inside it goes (with a reopen between).
#[test]
fn merging_and_splitting_components_stays_exact() {
    use Op::{Put, Remove, Reopen};
    let ring_a = [Put(0, 1, Some(0)), Put(1, 0, None)];
    let ring_b = [Put(2, 3, Some(1)), Put(3, 4, None), Put(4, 2, Some(0))];
    let mut ops: Vec<Op> = ring_a.into_iter().chain(ring_b).collect();
    ops.extend([
        Put(1, 2, Some(2)),
        Put(5, 0, None),
        Put(4, 6, None),
        // Closes 4 -> 0: the two rings and the chain become one component of five.
        Put(4, 0, Some(0)),
        // Splits it back into the two rings.
        Remove(4, 0),
        Put(4, 0, None),
        Reopen,
        // Cuts ring B inside the merged component: 2 and 3 leave it.
        Remove(3, 4),
        Put(3, 4, None),
        // A self-loop on a member, then the edge that held the component together goes.
        Put(2, 2, None),
        Remove(1, 2),
        Reopen,
        Remove(0, 1),
    ]);
    run(&ops).unwrap();
    // Again with hubs chosen once the rings stand: none, all, the first ring (a hub
    // component: 0 <-> 1), and hubs inside the component the merge builds.
    for mask in [0, 0x7f, 0b11, 0b10101] {
        let mut with_hubs = ops.clone();
        with_hubs.insert(5, Op::Hubs(mask));
        run(&with_hubs).unwrap();
    }
}

/// A first import chooses as hubs the nodes many edges point to (here `libc`, with 70), keeps
/// them across a reopen, and every answer stays exact through a merge through the hub and
/// the split that undoes it.
#[test]
fn a_first_import_chooses_hubs_and_answers_stay_exact() {
    let fx = Fixture::new(engine::Backend::Memory);
    let mut store = fx.open();
    let g = store.create_graph("deps", NamespaceKind::General).unwrap();
    let mut model = Model::default();
    let mut text = String::from("from\tto\tlabel\n");
    let edge = |model: &mut Model, text: &mut String, a: String, b: String| {
        text.push_str(&format!("{a}\t{b}\tdepends\n"));
        model.nodes.insert(a.clone());
        model.nodes.insert(b.clone());
        model.edges.insert((a, b), Some("depends".to_owned()));
    };
    for i in 0..70 {
        edge(&mut model, &mut text, format!("p{i:02}"), "libc".into());
        if i % 7 == 0 {
            edge(
                &mut model,
                &mut text,
                format!("p{i:02}"),
                format!("p{:02}", i + 1),
            );
        }
    }
    edge(&mut model, &mut text, "libc".into(), "gcc".into());
    edge(&mut model, &mut text, "gcc".into(), "libc".into());
    // A ring of packages that depends on libc: the merge closes a cycle through the hub.
    for (a, b) in [("r0", "r1"), ("r1", "r2"), ("r2", "r0"), ("r1", "libc")] {
        edge(&mut model, &mut text, a.into(), b.into());
    }
    g.import_tsv(text.as_bytes(), None).unwrap();
    assert_eq!(g.namespace().hubs(), ["libc"]);
    check(&g, &model).unwrap();
    drop(g);
    drop(store);
    store = fx.open();
    let g = store.graph("deps").unwrap().unwrap();
    assert_eq!(g.namespace().hubs(), ["libc"]);
    check(&g, &model).unwrap();
    g.put_edge("libc", "r0", Some("depends")).unwrap();
    model
        .edges
        .insert(("libc".into(), "r0".into()), Some("depends".into()));
    check(&g, &model).unwrap();
    assert!(g.reachable("p03", "r2", false).unwrap().reachable);
    assert_eq!(g.node("gcc").unwrap().component.len(), 5);
    g.remove_edge("libc", "r0").unwrap();
    model.edges.remove(&("libc".into(), "r0".into()));
    check(&g, &model).unwrap();
    assert!(!g.reachable("p03", "r2", false).unwrap().reachable);
}

#[test]
fn acyclic_graphs_refuse_cycles_and_self_loops() {
    let fx = Fixture::new(engine::Backend::Memory);
    let store = fx.open();
    let g = store.create_graph("dag", NamespaceKind::Acyclic).unwrap();
    g.put_edge("a", "b", None).unwrap();
    g.put_edge("b", "c", Some("contains")).unwrap();
    match g.put_edge("c", "a", None) {
        Err(Error::Cycle { cycle, .. }) => assert_eq!(cycle, ["a", "b", "c", "a"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        g.put_edge("b", "b", None),
        Err(Error::Cycle { .. })
    ));
    let bad = format!("{}\nc\ta\t\n", graphdb::graphs::GRAPH_HEADER);
    assert!(matches!(
        g.import_tsv(bad.as_bytes(), None),
        Err(Error::Cycle { .. })
    ));
    assert!(!g.reachable("c", "a", false).unwrap().reachable);
    // General graphs take self-loops: a node on one reaches itself.
    let general = store.create_graph("gen", NamespaceKind::General).unwrap();
    general.put_edge("x", "x", None).unwrap();
    let reach = general.reachable("x", "x", true).unwrap();
    assert_eq!(reach.path.unwrap(), ["x", "x"]);
    assert_eq!(general.node("x").unwrap().component, ["x"]);
    assert!(matches!(
        store.create_graph("gen", NamespaceKind::Acyclic),
        Err(Error::NamespaceKind { .. })
    ));
    assert!(store.graph("nope").unwrap().is_none());
}

#[test]
fn bad_labels_and_lines_are_refused() {
    let fx = Fixture::new(engine::Backend::Memory);
    let store = fx.open();
    let g = store.create_graph("g", NamespaceKind::General).unwrap();
    assert!(matches!(
        g.put_edge("a", "b", Some("")),
        Err(Error::InvalidLabel { .. })
    ));
    let long = "x".repeat(256);
    assert!(matches!(
        g.put_edge("a", "b", Some(&long)),
        Err(Error::InvalidLabel { .. })
    ));
    assert!(matches!(
        g.put_edge("a", "b", Some("a\u{7}")),
        Err(Error::InvalidLabel { .. })
    ));
    g.put_edge("a", "b", Some(&"x".repeat(255))).unwrap();
    let header = graphdb::graphs::GRAPH_HEADER;
    let cases = [
        (format!("{header}\na\tb\n"), 2),
        (format!("{header}\na\tb\tl\n\nc\td\te\tf\n"), 4),
        (format!("{header}\na\t\tl\n"), 2),
        ("x\ty\n".to_owned(), 1),
    ];
    for (text, line) in cases {
        match g.import_tsv(text.as_bytes(), None) {
            Err(Error::Import(graphdb::import::ImportError::Line { line: l, .. })) => {
                assert_eq!(l, line, "{text:?}")
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let text = format!("{header}\na\tc\t\nc\td\tx\n");
    match g.import_tsv(text.as_bytes(), Some(1)) {
        Err(Error::Import(graphdb::import::ImportError::Line { line: 3, problem })) => {
            assert!(matches!(
                problem,
                graphdb::import::LineProblem::TooManyEdges { limit: 1 }
            ))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(g.node("c"), Err(Error::UnknownNode { .. })));
    let (nodes, edges, _) = g.import_tsv(text.as_bytes(), Some(2)).unwrap();
    assert_eq!((nodes, edges), (0, 2));
    assert!(g.reachable("a", "d", false).unwrap().reachable);
}

#[test]
fn package_sets_may_opt_into_cycles() {
    let fx = Fixture::new(engine::Backend::Memory);
    let store = fx.open();
    let sets = graphdb::PackageSets::open(&store).unwrap();
    sets.add_set_with_cycles("ruby", true).unwrap();
    sets.add_set_with_cycles("gems", true).unwrap();
    sets.add_set("strict").unwrap();
    sets.put_item("ruby", "gems", graphdb::SetItem::Set)
        .unwrap();
    sets.put_item("gems", "ruby", graphdb::SetItem::Set)
        .unwrap();
    sets.put_item("gems", "rake", graphdb::SetItem::Package)
        .unwrap();
    assert!(sets.is_in("ruby", "ruby").unwrap());
    assert!(sets.is_in("rake", "ruby").unwrap());
    // A cycle through a set that did not opt in is refused, naming it.
    sets.put_item("strict", "ruby", graphdb::SetItem::Set)
        .unwrap();
    assert!(matches!(
        sets.put_item("gems", "strict", graphdb::SetItem::Set),
        Err(Error::Cycle { .. })
    ));
    assert!(matches!(
        sets.add_set_with_cycles("strict", true),
        Err(Error::CyclesFixed { .. })
    ));
    sets.add_set_with_cycles("ruby", true).unwrap();
    let header = graphdb::import::PACKAGE_SETS_HEADER;
    let cyclic = format!("{header}\ngems\tstrict\tset\n");
    assert!(matches!(
        sets.import_tsv(cyclic.as_bytes(), None),
        Err(Error::Cycle { .. })
    ));
    let fine = format!("{header}\nruby\tgems\tset\ngems\truby\tset\n");
    sets.import_tsv(fine.as_bytes(), None).unwrap();
    assert!(sets.check().is_clean());
    // The choice survives a reopen, and the feed replays it.
    drop(sets);
    drop(store);
    let store = fx.open();
    let sets = graphdb::PackageSets::open(&store).unwrap();
    assert!(sets.allows_cycles("ruby") && !sets.allows_cycles("strict"));
    assert!(sets.is_in("ruby", "gems").unwrap());
    let page = store.changes(0, 1000).unwrap();
    let other = Fixture::new(engine::Backend::Memory).open();
    for (_, change) in &page.changes {
        other.replay(change).unwrap();
    }
    let replayed = graphdb::PackageSets::open(&other).unwrap();
    assert!(replayed.allows_cycles("gems"));
    assert!(replayed.is_in("ruby", "ruby").unwrap());
}
