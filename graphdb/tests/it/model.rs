//! Random sequences of writes, expiries and reopens against a plain BFS model, comparing every
//! query after every step, on every backend and for both namespace kinds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use graphdb::{Depth, Error, Filter, NamespaceKind, NodeKind, Role};
use proptest::prelude::*;

use crate::support::Fixture;

const ACTOR: &str = graphdb::SYSTEM_ACTOR;
const PERSONS: usize = 4;
const GROUPS: usize = 5;

fn person(i: usize) -> String {
    format!("p{i}")
}
fn group(i: usize) -> String {
    format!("g{i}")
}

#[derive(Clone, Debug)]
enum Op {
    AddNode(bool, usize),
    Remove(bool, usize),
    /// member (person?, index), group, role admin?, expiry offset from now
    Set(bool, usize, usize, bool, Option<i64>),
    Unset(bool, usize, usize),
    Grant(bool, usize, usize, Option<i64>),
    Revoke(bool, usize, usize),
    Advance(i64),
    Reopen,
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    let node = (any::<bool>(), 0..GROUPS);
    let expiry = prop_oneof![3 => Just(None), 2 => (-2i64..6).prop_map(Some)];
    prop_oneof![
        3 => node.clone().prop_map(|(p, i)| Op::AddNode(p, i)),
        1 => node.clone().prop_map(|(p, i)| Op::Remove(p, i)),
        8 => (node.clone(), 0..GROUPS, any::<bool>(), expiry.clone())
            .prop_map(|((p, m), g, a, e)| Op::Set(p, m, g, a, e)),
        3 => (node.clone(), 0..GROUPS).prop_map(|((p, m), g)| Op::Unset(p, m, g)),
        1 => (node.clone(), 0..GROUPS, expiry).prop_map(|((p, m), g, e)| Op::Grant(p, m, g, e)),
        1 => (node, 0..GROUPS).prop_map(|((p, m), g)| Op::Revoke(p, m, g)),
        2 => (0i64..4).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
        1 => Just(Op::Rebuild),
    ]
}

fn name(is_person: bool, i: usize) -> String {
    if is_person {
        person(i % PERSONS)
    } else {
        group(i)
    }
}

#[derive(Default, Debug)]
struct Model {
    nodes: BTreeMap<String, NodeKind>,
    /// (member, group) -> (role, expires)
    edges: BTreeMap<(String, String), (Role, Option<i64>)>,
    /// (holder, target) -> expires, relation "audits"
    audits: BTreeMap<(String, String), Option<i64>>,
}

fn live(expires: Option<i64>, now: i64) -> bool {
    expires.is_none_or(|e| e > now)
}

impl Model {
    /// Groups reachable upward from `x` over at least one active edge.
    fn up(&self, x: &str, now: i64) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([x.to_owned()]);
        while let Some(y) = queue.pop_front() {
            for ((m, g), (_, e)) in &self.edges {
                if *m == y && live(*e, now) && seen.insert(g.clone()) {
                    queue.push_back(g.clone());
                }
            }
        }
        seen
    }

    fn down(&self, g: &str, now: i64) -> BTreeSet<String> {
        self.nodes
            .keys()
            .filter(|x| self.up(x, now).contains(g))
            .cloned()
            .collect()
    }
}

fn check_all(ns: &graphdb::Namespace, model: &Model, now: i64) -> Result<(), TestCaseError> {
    let view = ns.view();
    prop_assert_eq!(view.now(), now);
    let stored: Vec<(String, NodeKind)> = ns.nodes();
    let expected: Vec<(String, NodeKind)> =
        model.nodes.iter().map(|(n, k)| (n.clone(), *k)).collect();
    prop_assert_eq!(stored, expected);
    for x in model.nodes.keys() {
        let up = model.up(x, now);
        let got = view
            .groups_of(x, Depth::Transitive, None, 100)
            .unwrap()
            .items;
        prop_assert_eq!(
            &got,
            &up.iter().cloned().collect::<Vec<_>>(),
            "groups of {}",
            x
        );
        let direct: Vec<String> = model
            .edges
            .iter()
            .filter(|((m, _), (_, e))| m == x && live(*e, now))
            .map(|((_, g), _)| g.clone())
            .collect();
        prop_assert_eq!(
            view.groups_of(x, Depth::Direct, None, 100).unwrap().items,
            direct
        );
        for (g, kind) in &model.nodes {
            let member = up.contains(g);
            prop_assert_eq!(view.is_member(x, g).unwrap(), member, "{} in {}", x, g);
            let path = view.path(x, g).unwrap();
            prop_assert_eq!(path.is_some(), member);
            if let Some(path) = path {
                prop_assert_eq!(path.first(), Some(x));
                prop_assert_eq!(path.last(), Some(g));
                for w in path.windows(2) {
                    let e = model.edges.get(&(w[0].clone(), w[1].clone()));
                    prop_assert!(e.is_some_and(|(_, e)| live(*e, now)), "path step {:?}", w);
                }
            }
            if *kind == NodeKind::Group {
                let holders: BTreeSet<String> = model
                    .audits
                    .iter()
                    .filter(|((_, t), e)| t == g && live(**e, now))
                    .flat_map(|((h, _), _)| {
                        let mut s = model.down(h, now);
                        s.insert(h.clone());
                        s
                    })
                    .collect();
                prop_assert_eq!(
                    view.is_holder(x, "audits", g).unwrap(),
                    holders.contains(x),
                    "{} audits {}",
                    x,
                    g
                );
            }
        }
    }
    for (g, kind) in &model.nodes {
        if *kind != NodeKind::Group {
            continue;
        }
        let down = model.down(g, now);
        for (filter, want) in [
            (Filter::All, None),
            (Filter::Leaves, Some(NodeKind::Leaf)),
            (Filter::Groups, Some(NodeKind::Group)),
        ] {
            let expected: Vec<String> = down
                .iter()
                .filter(|x| want.is_none_or(|k| model.nodes[*x] == k))
                .cloned()
                .collect();
            // Two pages of 3, then the rest.
            let p1 = view.members(g, Depth::Transitive, filter, None, 3).unwrap();
            let mut got = p1.items.clone();
            if let Some(next) = p1.next.as_deref() {
                got.extend(
                    view.members(g, Depth::Transitive, filter, Some(next), 100)
                        .unwrap()
                        .items,
                );
            }
            prop_assert_eq!(&got, &expected, "members of {} ({:?})", g, filter);
        }
        let direct: Vec<String> = model
            .edges
            .iter()
            .filter(|((_, gg), (_, e))| gg == g && live(*e, now))
            .map(|((m, _), _)| m.clone())
            .collect();
        prop_assert_eq!(
            view.members(g, Depth::Direct, Filter::All, None, 100)
                .unwrap()
                .items,
            direct
        );
    }
    drop(view);
    let report = ns.check();
    prop_assert!(report.is_clean(), "{:?}", report.differences);
    Ok(())
}

fn run(fx: &Fixture, kind: NamespaceKind, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut store = Some(fx.open());
    let mut ns = store.as_ref().unwrap().namespace("model", kind).unwrap();
    let base = graphdb::Clock::now_seconds(&*fx.clock);
    let mut now = base;
    for op in ops {
        match op.clone() {
            Op::AddNode(is_person, i) => {
                let n = name(is_person, i);
                let kind = if is_person {
                    NodeKind::Leaf
                } else {
                    NodeKind::Group
                };
                let r = ns.add_node(ACTOR, &n, kind);
                match model.nodes.get(&n) {
                    Some(k) if *k != kind => {
                        prop_assert!(matches!(r, Err(Error::WrongKind { .. })), "{:?}", r)
                    }
                    _ => {
                        prop_assert!(r.is_ok());
                        model.nodes.insert(n, kind);
                    }
                }
            }
            Op::Remove(is_person, i) => {
                let n = name(is_person, i);
                let existed = model.nodes.remove(&n).is_some();
                model.edges.retain(|(m, g), _| *m != n && *g != n);
                model.audits.retain(|(h, t), _| *h != n && *t != n);
                prop_assert_eq!(ns.remove_node(ACTOR, &n).unwrap().is_some(), existed);
            }
            Op::Set(is_person, m, g, admin, offset) => {
                let (m, g) = (name(is_person, m), group(g));
                let role = if admin { Role::Admin } else { Role::Member };
                let expires = offset.map(|o| now + o);
                let r = ns.set_membership(ACTOR, &m, &g, role, expires);
                if !model.nodes.contains_key(&m) || !model.nodes.contains_key(&g) {
                    prop_assert!(matches!(r, Err(Error::UnknownNode { .. })), "{:?}", r);
                } else if model.nodes[&g] != NodeKind::Group {
                    prop_assert!(matches!(r, Err(Error::WrongKind { .. })), "{:?}", r);
                } else {
                    let was_live = model
                        .edges
                        .get(&(m.clone(), g.clone()))
                        .is_some_and(|(_, e)| live(*e, now));
                    let closes = kind == NamespaceKind::Acyclic
                        && live(expires, now)
                        && !was_live
                        && (m == g || model.up(&g, now).contains(&m));
                    if closes {
                        prop_assert!(matches!(r, Err(Error::Cycle { .. })), "{:?}", r);
                    } else {
                        prop_assert!(r.is_ok(), "{:?}", r);
                        model.edges.insert((m, g), (role, expires));
                    }
                }
            }
            Op::Unset(is_person, m, g) => {
                let (m, g) = (name(is_person, m), group(g));
                let r = ns.remove_membership(ACTOR, &m, &g);
                if !model.nodes.contains_key(&m) || !model.nodes.contains_key(&g) {
                    prop_assert!(matches!(r, Err(Error::UnknownNode { .. })), "{:?}", r);
                } else {
                    prop_assert_eq!(r.unwrap().is_some(), model.edges.remove(&(m, g)).is_some());
                }
            }
            Op::Grant(is_person, h, t, offset) => {
                let (h, t) = (name(is_person, h), group(t));
                let expires = offset.map(|o| now + o);
                let r = ns.grant(ACTOR, &h, "audits", &t, expires);
                if !model.nodes.contains_key(&h) || !model.nodes.contains_key(&t) {
                    prop_assert!(matches!(r, Err(Error::UnknownNode { .. })), "{:?}", r);
                } else {
                    prop_assert!(r.is_ok());
                    model.audits.insert((h, t), expires);
                }
            }
            Op::Revoke(is_person, h, t) => {
                let (h, t) = (name(is_person, h), group(t));
                let r = ns.revoke(ACTOR, &h, "audits", &t);
                if !model.nodes.contains_key(&h) || !model.nodes.contains_key(&t) {
                    prop_assert!(matches!(r, Err(Error::UnknownNode { .. })), "{:?}", r);
                } else {
                    prop_assert_eq!(r.unwrap().is_some(), model.audits.remove(&(h, t)).is_some());
                }
            }
            Op::Advance(s) => {
                now += s;
                fx.clock.set_seconds(now);
            }
            Op::Reopen => {
                drop(ns);
                drop(store.take());
                store = Some(fx.open());
                ns = store.as_ref().unwrap().namespace("model", kind).unwrap();
            }
            Op::Rebuild => ns.rebuild().unwrap(),
        }
        check_all(&ns, &model, now)?;
    }
    Ok(())
}

/// 256 cases on memory, 12 on the disk backends; `PROPTEST_CASES` overrides both.
fn cases(fx: &Fixture) -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    match fx.backend {
        engine::Backend::Memory => 256,
        _ => 12,
    }
}

pub fn acyclic_matches_bfs(fx: Fixture) {
    let config = ProptestConfig {
        cases: cases(&fx),
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        let fx = Fixture::new(fx.backend);
        run(&fx, NamespaceKind::Acyclic, &ops)?;
    });
}

pub fn general_matches_bfs(fx: Fixture) {
    let config = ProptestConfig {
        cases: cases(&fx),
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        let fx = Fixture::new(fx.backend);
        run(&fx, NamespaceKind::General, &ops)?;
    });
}

crate::backend_tests!(model: acyclic_matches_bfs, general_matches_bfs);
