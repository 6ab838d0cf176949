//! General graphs over real sockets: every route and its errors, a generated graph full of
//! cycles compared with BFS before and after edge changes, and TSV exports that the import
//! routes read back unchanged.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{json, Value};

use crate::directory::{import, Access, Dir};
use crate::support::{client, error_code, PASSWORD, USER};

async fn text(d: &Dir, path: &str) -> String {
    let response = client()
        .get(d.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.text().await.unwrap()
}

fn has_revision(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("x-revision")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.parse::<u64>().is_ok())
}

async fn put_edge(
    d: &Dir,
    g: &str,
    from: &str,
    to: &str,
    label: Option<&str>,
) -> reqwest::Response {
    let body = label.map(|l| json!({ "label": l }));
    d.put(&format!("/graphs/{g}/edges/{from}/{to}"), body).await
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn graph_routes_and_their_errors() {
    let d = Dir::memory(Access::default()).await;
    let created = d
        .put("/graphs/deps", Some(json!({"kind": "general"})))
        .await;
    assert_eq!(created.status(), 200);
    assert!(has_revision(&created));
    let again = d
        .put("/graphs/deps", Some(json!({"kind": "acyclic"})))
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "graph_kind");
    let bad = d.put("/graphs/x", Some(json!({"kind": "cyclic"}))).await;
    assert_eq!(bad.status(), 400);

    for (from, to) in [
        ("libc6", "libgcc-s1"),
        ("libgcc-s1", "libc6"),
        ("bash", "libc6"),
    ] {
        let r = put_edge(&d, "deps", from, to, Some("depends")).await;
        assert_eq!(r.status(), 200, "{from} -> {to}");
        assert!(has_revision(&r));
    }
    // A self-loop is fine in a general graph; so is an edge without a label.
    assert_eq!(
        put_edge(&d, "deps", "loop", "loop", None).await.status(),
        200
    );
    assert_eq!(
        put_edge(&d, "deps", "task-gnome", "bash", None)
            .await
            .status(),
        200
    );

    let r = d
        .get("/graphs/deps/reachable?from=task-gnome&to=libgcc-s1&path=true")
        .await;
    assert_eq!(
        r,
        json!({"reachable": true, "path": ["task-gnome", "bash", "libc6", "libgcc-s1"]})
    );
    let r = d.get("/graphs/deps/reachable?from=libc6&to=bash").await;
    assert_eq!(r, json!({"reachable": false}));
    let r = d
        .get("/graphs/deps/reachable?from=loop&to=loop&path=true")
        .await;
    assert_eq!(r, json!({"reachable": true, "path": ["loop", "loop"]}));

    let node = d.get("/graphs/deps/nodes/libc6").await;
    assert_eq!(
        node,
        json!({
            "node": "libc6",
            "out": [{"to": "libgcc-s1", "label": "depends"}],
            "in": [{"from": "bash", "label": "depends"}, {"from": "libgcc-s1", "label": "depends"}],
            "component": ["libc6", "libgcc-s1"],
        })
    );
    assert_eq!(
        d.get("/graphs/deps/nodes/bash").await["component"],
        json!([])
    );

    let page = d
        .get("/graphs/deps/nodes/task-gnome/descendants?limit=2")
        .await;
    assert_eq!(
        page,
        json!({"descendants": ["bash", "libc6"], "next": "libc6"})
    );
    let page = d
        .get("/graphs/deps/nodes/task-gnome/descendants?limit=2&after=libc6")
        .await;
    assert_eq!(page, json!({"descendants": ["libgcc-s1"], "next": null}));
    let page = d
        .get("/graphs/deps/nodes/task-gnome/descendants?label=depends")
        .await;
    assert_eq!(page, json!({"descendants": [], "next": null}));
    let page = d
        .get("/graphs/deps/nodes/bash/descendants?label=depends&depth=1")
        .await;
    assert_eq!(page["descendants"], json!(["libc6"]));
    let page = d.get("/graphs/deps/nodes/libgcc-s1/ancestors").await;
    assert_eq!(
        page["ancestors"],
        json!(["bash", "libc6", "libgcc-s1", "task-gnome"])
    );

    for (path, status) in [
        ("/graphs/nope/nodes/a", 404),
        ("/graphs/deps/nodes/nope", 404),
        ("/graphs/deps/nodes/nope/descendants", 404),
        ("/graphs/deps/reachable?from=bash&to=nope", 404),
        ("/graphs/nope/edges", 404),
        ("/graphs/deps/nodes/bash/descendants?depth=0", 400),
        ("/graphs/deps/nodes/bash/descendants?limit=0", 400),
        ("/graphs/deps/nodes/bash/descendants?colour=red", 400),
        ("/graphs/deps/reachable?from=bash", 400),
    ] {
        let (got, _) = d.status(reqwest::Method::GET, path).await;
        assert_eq!(got, status, "{path}");
    }
    assert_eq!(put_edge(&d, "nope", "a", "b", None).await.status(), 404);
    let long = "x".repeat(256);
    let r = put_edge(&d, "deps", "a", "b", Some(&long)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_label");

    // Acyclic graphs name the cycle, and refuse self-loops.
    d.put("/graphs/dag", Some(json!({"kind": "acyclic"}))).await;
    put_edge(&d, "dag", "a", "b", None).await;
    put_edge(&d, "dag", "b", "c", Some("contains")).await;
    let r = put_edge(&d, "dag", "c", "a", None).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["cycle"], json!(["a", "b", "c", "a"]));
    assert_eq!(put_edge(&d, "dag", "b", "b", None).await.status(), 409);

    // Deleting: 204 with a revision, then 404.
    let url = d.url("/graphs/deps/edges/libgcc-s1/libc6");
    let del = client()
        .delete(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert!(has_revision(&del));
    let del = client()
        .delete(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);
    assert_eq!(
        d.get("/graphs/deps/nodes/libc6").await["component"],
        json!([])
    );

    // Edge changes are events of the feed, with their label.
    let feed = d.get("/changes?after=0").await;
    let events = feed["changes"].as_array().unwrap();
    assert!(events.iter().any(|e| e["kind"] == "membership.added"
        && e["namespace"] == "graphs/deps"
        && e["member"] == "bash"
        && e["group"] == "libc6"
        && e["label"] == "depends"));
    d.stop().await;
}

/// A deterministic generator of graphs with many cycles.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

type Edges = BTreeMap<(String, String), Option<String>>;

fn bfs(
    edges: &Edges,
    from: &str,
    forward: bool,
    label: Option<&str>,
    depth: Option<u32>,
) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue = VecDeque::from([(from.to_owned(), 0u32)]);
    while let Some((at, d)) = queue.pop_front() {
        if depth.is_some_and(|m| d >= m) {
            continue;
        }
        for ((a, b), l) in edges {
            let (here, there) = if forward { (a, b) } else { (b, a) };
            if *here == at
                && label.is_none_or(|want| l.as_deref() == Some(want))
                && seen.insert(there.clone())
            {
                queue.push_back((there.clone(), d + 1));
            }
        }
    }
    seen.into_iter().collect()
}

async fn all_pages(d: &Dir, path: &str, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &after {
            Some(a) => format!("{path}{sep}limit=25&after={a}"),
            None => format!("{path}{sep}limit=25"),
        };
        let page = d.get(&url).await;
        out.extend(strings(&page[field]));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return out,
        }
    }
}

async fn compare(d: &Dir, edges: &Edges, nodes: &[String], rng: &mut Rng) {
    for a in nodes {
        let down = bfs(edges, a, true, None, None);
        assert_eq!(
            all_pages(
                d,
                &format!("/graphs/gen/nodes/{a}/descendants"),
                "descendants"
            )
            .await,
            down,
            "{a}"
        );
        let up = bfs(edges, a, false, None, None);
        assert_eq!(
            all_pages(d, &format!("/graphs/gen/nodes/{a}/ancestors"), "ancestors").await,
            up
        );
        let path = format!("/graphs/gen/nodes/{a}/descendants?label=depends&depth=2");
        assert_eq!(
            strings(&d.get(&path).await["descendants"]),
            bfs(edges, a, true, Some("depends"), Some(2))
        );
        let b = &nodes[rng.next(nodes.len())];
        let r = d
            .get(&format!("/graphs/gen/reachable?from={a}&to={b}&path=true"))
            .await;
        assert_eq!(r["reachable"], json!(down.contains(b)), "{a} -> {b}");
        if let Some(path) = r["path"].as_array() {
            let path: Vec<String> = path
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            assert!(path
                .windows(2)
                .all(|w| edges.contains_key(&(w[0].clone(), w[1].clone()))));
        }
        let component: Vec<String> = down.iter().filter(|x| up.contains(x)).cloned().collect();
        assert_eq!(
            strings(&d.get(&format!("/graphs/gen/nodes/{a}")).await["component"]),
            component
        );
    }
}

#[tokio::test]
async fn a_generated_cyclic_graph_answers_like_bfs_and_round_trips() {
    let d = Dir::memory(Access {
        max_import_edges: Some(1000),
        ..Access::default()
    })
    .await;
    d.put("/graphs/gen", Some(json!({"kind": "general"}))).await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Names not in creation order.
    let nodes: Vec<String> = (0..40).map(|i| format!("p{:02}", (i * 17) % 40)).collect();
    let labels = [None, Some("depends"), Some("recommends")];
    let mut edges = Edges::new();
    let mut tsv = String::from("from\tto\tlabel\n");
    while edges.len() < 70 {
        let (a, b) = (&nodes[rng.next(40)], &nodes[rng.next(40)]);
        let label = labels[rng.next(3)];
        let key = (a.clone(), b.clone());
        if let std::collections::btree_map::Entry::Vacant(slot) = edges.entry(key) {
            slot.insert(label.map(str::to_owned));
            tsv.push_str(&format!("{a}\t{b}\t{}\n", label.unwrap_or("")));
        }
    }
    let r = import(&d, "/import/graphs/gen", tsv.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(has_revision(&r));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["edges"], 70);
    let present: Vec<String> = nodes
        .iter()
        .filter(|n| edges.keys().any(|(a, b)| a == *n || b == *n))
        .cloned()
        .collect();
    compare(&d, &edges, &present, &mut rng).await;

    // Edges that merge and split components, one at a time.
    for _ in 0..20 {
        let (a, b) = (
            &present[rng.next(present.len())],
            &present[rng.next(present.len())],
        );
        if edges.remove(&(a.clone(), b.clone())).is_some() {
            let url = d.url(&format!("/graphs/gen/edges/{a}/{b}"));
            let r = client()
                .delete(url)
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        } else {
            assert_eq!(
                put_edge(&d, "gen", a, b, Some("depends")).await.status(),
                200
            );
            edges.insert((a.clone(), b.clone()), Some("depends".to_owned()));
        }
    }
    compare(&d, &edges, &present, &mut rng).await;

    // Export, import into another graph, export again: identical.
    let exported = text(&d, "/graphs/gen/edges").await;
    d.put("/graphs/copy", Some(json!({"kind": "general"})))
        .await;
    assert_eq!(
        import(&d, "/import/graphs/copy", exported.clone())
            .await
            .status(),
        200
    );
    assert_eq!(text(&d, "/graphs/copy/edges").await, exported);

    // All or nothing: a bad line names itself and changes nothing; over the limit is 413.
    let bad = "from\tto\tlabel\nx\ty\t\nx\ty\tz\tw\n".to_owned();
    let r = import(&d, "/import/graphs/copy", bad).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["line"], 3);
    assert_eq!(
        d.status(reqwest::Method::GET, "/graphs/copy/nodes/x")
            .await
            .0,
        404
    );
    let mut big = String::from("from\tto\tlabel\n");
    for i in 0..1001 {
        big.push_str(&format!("a{i}\tb{i}\t\n"));
    }
    let r = import(&d, "/import/graphs/copy", big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(import(&d, "/import/graphs/nope", tsv).await.status(), 404);
    d.stop().await;
}

#[tokio::test]
async fn team_and_package_set_exports_round_trip() {
    let d = Dir::memory(Access::default()).await;
    let teams =
        "team\tmember\trole\texpires\nubuntu\tcore\tmember\t\ncore\talice\tadmin\t2000000000\n\
                 ubuntu\tbob\taudits\t\nlonely\t\t\t\n\tcarol\t\t\n";
    assert_eq!(
        import(&d, "/import/teams", teams.to_owned()).await.status(),
        200
    );
    let sets = "set\titem\ttype\nmain\tcore\tset\ncore\tbash\tpackage\nempty\t\t\n\tzsh\tpackage\n";
    assert_eq!(
        import(&d, "/import/packagesets", sets.to_owned())
            .await
            .status(),
        200
    );
    let teams_out = text(&d, "/export/teams").await;
    let sets_out = text(&d, "/export/packagesets").await;
    assert!(teams_out.starts_with("team\tmember\trole\texpires\n"));
    assert!(teams_out.contains("core\talice\tadmin\t2000000000\n"));
    assert!(sets_out.contains("core\tbash\tpackage\n"));

    let e = Dir::memory(Access::default()).await;
    assert_eq!(
        import(&e, "/import/teams", teams_out.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        import(&e, "/import/packagesets", sets_out.clone())
            .await
            .status(),
        200
    );
    assert_eq!(text(&e, "/export/teams").await, teams_out);
    assert_eq!(text(&e, "/export/packagesets").await, sets_out);
    d.stop().await;
    e.stop().await;
}

#[tokio::test]
async fn relations_both_ways_and_why_paths() {
    let d = Dir::memory(Access::default()).await;
    let teams = "team\tmember\trole\texpires\nubuntu\tcore\tmember\t\ncore\talice\tmember\t\n\
                 security\tubuntu\taudits\t\nkernel\tcore\taudits\t\nkernel\tbob\taudits\t\n\
                 desktop\tcarol\taudits\t\n";
    assert_eq!(
        import(&d, "/import/teams", teams.to_owned()).await.status(),
        200
    );
    let r = d.get("/persons/alice/relations?relation=audits").await;
    assert_eq!(r, json!({"teams": ["kernel", "security"], "next": null}));
    let r = d
        .get("/persons/alice/relations?relation=audits&limit=1")
        .await;
    assert_eq!(r, json!({"teams": ["kernel"], "next": "kernel"}));
    let r = d.get("/persons/bob/relations?relation=audits").await;
    assert_eq!(r["teams"], json!(["kernel"]));
    let r = d.get("/persons/alice/relations?relation=administers").await;
    assert_eq!(r["teams"], json!([]));
    let (status, _) = d
        .status(
            reqwest::Method::GET,
            "/persons/nobody/relations?relation=audits",
        )
        .await;
    assert_eq!(status, 404);

    let r = d
        .get("/teams/security/holders/audits/alice?path=true")
        .await;
    assert_eq!(
        r,
        json!({"holder": true, "path": ["alice", "core", "ubuntu"]})
    );
    let r = d.get("/teams/kernel/holders/audits/alice?path=true").await;
    assert_eq!(r, json!({"holder": true, "path": ["alice", "core"]}));
    let r = d.get("/teams/kernel/holders/audits/bob?path=true").await;
    assert_eq!(r, json!({"holder": true, "path": ["bob"]}));
    let r = d.get("/teams/desktop/holders/audits/alice?path=true").await;
    assert_eq!(r, json!({"holder": false, "path": null}));
    assert_eq!(
        d.get("/teams/kernel/holders/audits/alice").await,
        json!({"holder": true})
    );

    let sets = "set\titem\ttype\nmain\tcore\tset\ncore\tbash\tpackage\n\tzsh\tpackage\n";
    assert_eq!(
        import(&d, "/import/packagesets", sets.to_owned())
            .await
            .status(),
        200
    );
    let r = d.get("/packagesets/main/packages/bash?path=true").await;
    assert_eq!(
        r,
        json!({"contains": true, "path": ["bash", "core", "main"]})
    );
    assert_eq!(
        d.get("/packagesets/main/packages/zsh").await,
        json!({"contains": false})
    );
    let (status, _) = d
        .status(reqwest::Method::GET, "/packagesets/main/packages/nope")
        .await;
    assert_eq!(status, 404);
    d.stop().await;
}

#[tokio::test]
async fn package_sets_opt_into_cycles_when_created() {
    let d = Dir::memory(Access::default()).await;
    for set in ["ruby", "gems"] {
        let r = d
            .put(
                &format!("/packagesets/{set}"),
                Some(json!({"cycles": "allow"})),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(has_revision(&r));
    }
    assert_eq!(d.put("/packagesets/strict", None).await.status(), 200);
    let r = d
        .put("/packagesets/strict", Some(json!({"cycles": "allow"})))
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await, "cycles_fixed");
    assert_eq!(
        d.put("/packagesets/x", Some(json!({"cycles": "maybe"})))
            .await
            .status(),
        400
    );
    assert_eq!(
        d.put("/packagesets/ruby/items/gems?type=set", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        d.put("/packagesets/gems/items/ruby?type=set", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        d.put("/packagesets/strict/items/ruby?type=set", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        d.put("/packagesets/gems/items/strict?type=set", None)
            .await
            .status(),
        409
    );
    let r = d.get("/packagesets/ruby/packages/ruby?path=true").await;
    assert_eq!(
        r,
        json!({"contains": true, "path": ["ruby", "gems", "ruby"]})
    );
    d.stop().await;
}
