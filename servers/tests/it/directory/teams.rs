//! Teams, memberships, package sets and imports over HTTP, against BFS on generated graphs.

use super::*;

#[tokio::test]
async fn team_routes_and_their_errors() {
    let d = Dir::memory(Access::default()).await;
    assert_eq!(d.put("/teams/ubuntu-dev", None).await.status(), 200);
    assert_eq!(d.put("/persons/alice", None).await.status(), 200);
    assert_eq!(d.put("/teams/core-dev", None).await.status(), 200);
    // Missing members are created as persons (bob, carol).
    let r = d
        .put(
            "/teams/ubuntu-dev/members/core-dev",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        d.put(
            "/teams/core-dev/members/alice",
            Some(json!({"role": "admin", "expires": null}))
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        d.put(
            "/teams/core-dev/members/bob",
            Some(json!({"role": "member"}))
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        d.put(
            "/teams/ubuntu-dev/members/carol",
            Some(json!({"role": "member"}))
        )
        .await
        .status(),
        200
    );

    let all = d.get("/teams/ubuntu-dev/members").await;
    assert_eq!(
        names(&all["members"]),
        ["alice", "bob", "carol", "core-dev"]
    );
    assert_eq!(all["next"], Value::Null);
    let persons = d.get("/teams/ubuntu-dev/members?type=person").await;
    assert_eq!(names(&persons["members"]), ["alice", "bob", "carol"]);
    let direct = d.get("/teams/ubuntu-dev/members?transitive=false").await;
    assert_eq!(names(&direct["members"]), ["carol", "core-dev"]);
    let teams = d.get("/teams/ubuntu-dev/members?type=team").await;
    assert_eq!(names(&teams["members"]), ["core-dev"]);
    // Pages.
    let first = d.get("/teams/ubuntu-dev/members?type=person&limit=2").await;
    assert_eq!(names(&first["members"]), ["alice", "bob"]);
    let next = first["next"].as_str().unwrap().to_string();
    let second = d
        .get(&format!(
            "/teams/ubuntu-dev/members?type=person&limit=2&after={next}"
        ))
        .await;
    assert_eq!(names(&second["members"]), ["carol"]);
    assert_eq!(second["next"], Value::Null);

    let check = d.get("/teams/ubuntu-dev/members/alice").await;
    assert_eq!(check["member"], true);
    assert_eq!(names(&check["path"]), ["alice", "core-dev", "ubuntu-dev"]);
    let check = d.get("/teams/core-dev/members/carol").await;
    assert_eq!(check["member"], false);
    assert_eq!(names(&check["path"]), Vec::<String>::new());
    let of = d.get("/persons/alice/teams").await;
    assert_eq!(names(&of["teams"]), ["core-dev", "ubuntu-dev"]);
    let of = d.get("/persons/alice/teams?transitive=false").await;
    assert_eq!(names(&of["teams"]), ["core-dev"]);

    // A relation: core-dev audits the security team, so its members hold it.
    assert_eq!(
        d.put(
            "/teams/security/members/core-dev",
            Some(json!({"role": "audits"}))
        )
        .await
        .status(),
        200
    );
    let holders = d.get("/teams/security/holders/audits?type=person").await;
    assert_eq!(names(&holders["holders"]), ["alice", "bob"]);
    assert_eq!(
        d.get("/teams/security/holders/audits/alice").await["holder"],
        true
    );
    assert_eq!(
        d.get("/teams/security/holders/audits/carol").await["holder"],
        false
    );
    // A relation is not a membership.
    assert_eq!(
        d.get("/teams/security/members/alice").await["member"],
        false
    );

    // A cycle is 409 with the cycle.
    let r = d
        .put(
            "/teams/core-dev/members/ubuntu-dev",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cycle");
    let cycle = names(&body["error"]["cycle"]);
    assert!(
        cycle.contains(&"core-dev".to_string()) && cycle.contains(&"ubuntu-dev".to_string()),
        "{cycle:?}"
    );
    // A person cannot have members.
    let r = d
        .put("/teams/alice/members/bob", Some(json!({"role": "member"})))
        .await;
    assert_eq!(r.status(), 400);
    // Malformed JSON, unknown fields, bad names.
    let r = client()
        .put(d.url("/teams/core-dev/members/alice"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .body("{\"role\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_json");
    let r = d
        .put(
            "/teams/core-dev/members/alice",
            Some(json!({"role": "member", "bogus": 1})),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = d
        .put(
            "/teams/core-dev/members/alice",
            Some(json!({"role": "No Such Role!"})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        d.status(reqwest::Method::PUT, "/persons/a%01b").await,
        (400, "bad_name".into())
    );
    let long = "x".repeat(256);
    assert_eq!(
        d.status(reqwest::Method::PUT, &format!("/persons/{long}"))
            .await,
        (400, "bad_name".into())
    );
    assert_eq!(
        d.status(
            reqwest::Method::PUT,
            &format!("/persons/{}", "x".repeat(255))
        )
        .await
        .0,
        200
    );
    // Unknown names are 404.
    assert_eq!(
        d.status(reqwest::Method::GET, "/teams/nope/members").await,
        (404, "not_found".into())
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/teams/ubuntu-dev/members/nobody")
            .await
            .0,
        404
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/persons/nobody/teams")
            .await
            .0,
        404
    );
    assert_eq!(
        d.status(
            reqwest::Method::GET,
            "/teams/ubuntu-dev/members?type=robots"
        )
        .await
        .0,
        400
    );

    // Removal.
    assert_eq!(
        d.status(reqwest::Method::DELETE, "/teams/core-dev/members/alice")
            .await
            .0,
        204
    );
    assert_eq!(
        d.status(reqwest::Method::DELETE, "/teams/core-dev/members/alice")
            .await
            .0,
        404
    );
    assert_eq!(
        d.get("/teams/ubuntu-dev/members/alice").await["member"],
        false
    );
    assert_eq!(
        d.status(
            reqwest::Method::DELETE,
            "/teams/security/members/core-dev?relation=audits"
        )
        .await
        .0,
        204
    );
    assert_eq!(
        d.get("/teams/security/holders/audits/bob").await["holder"],
        false
    );
    d.stop().await;
}

#[tokio::test]
async fn memberships_expire_at_the_clock() {
    let d = Dir::memory(Access::default()).await;
    let r = d
        .put(
            "/teams/t/members/p",
            Some(json!({"role": "member", "expires": NOW + 100})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(d.get("/teams/t/members/p").await["member"], true);
    d.clock.set_seconds(NOW + 99);
    assert_eq!(d.get("/teams/t/members/p").await["member"], true);
    d.clock.set_seconds(NOW + 100);
    assert_eq!(d.get("/teams/t/members/p").await["member"], false);
    assert_eq!(
        names(&d.get("/teams/t/members").await["members"]),
        Vec::<String>::new()
    );
    d.stop().await;
}

#[tokio::test]
async fn package_sets() {
    let d = Dir::memory(Access::default()).await;
    assert_eq!(
        d.put("/packagesets/desktop/items/gnome?type=set", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        d.put("/packagesets/gnome/items/gedit", None).await.status(),
        200
    );
    assert_eq!(
        d.put("/packagesets/desktop/items/firefox?type=package", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        d.put("/packagesets/core/items/bash", None).await.status(),
        200
    );
    let all = d.get("/packagesets/desktop/packages").await;
    assert_eq!(names(&all["packages"]), ["firefox", "gedit"]);
    let direct = d
        .get("/packagesets/desktop/packages?transitive=false")
        .await;
    assert_eq!(names(&direct["packages"]), ["firefox"]);
    let sets = d.get("/packages/gedit/packagesets").await;
    assert_eq!(names(&sets["packagesets"]), ["desktop", "gnome"]);
    let r = d
        .put("/packagesets/gnome/items/desktop?type=set", None)
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(
        d.status(
            reqwest::Method::PUT,
            "/packagesets/core/items/x?type=module"
        )
        .await
        .0,
        400
    );
    assert_eq!(
        d.status(reqwest::Method::DELETE, "/packagesets/gnome/items/gedit")
            .await
            .0,
        204
    );
    assert_eq!(
        names(&d.get("/packagesets/desktop/packages").await["packages"]),
        ["firefox"]
    );
    assert_eq!(
        d.status(reqwest::Method::DELETE, "/packagesets/gnome/items/gedit")
            .await
            .0,
        404
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/packages/nope/packagesets")
            .await
            .0,
        404
    );
    d.stop().await;
}

#[tokio::test]
async fn imports_are_all_or_nothing() {
    let d = Dir::memory(Access::default()).await;
    let bad = "team\tmember\trole\texpires\nt1\tp1\tmember\t\nt1\tp2\tmember\tsoon\n";
    let r = import(&d, "/import/teams", bad.to_string()).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_import");
    assert_eq!(body["error"]["line"], 3);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 3"));
    assert_eq!(
        d.status(reqwest::Method::GET, "/teams/t1/members").await.0,
        404
    );
    let good = "team\tmember\trole\texpires\nt1\t\t\t\nt1\tp1\tmember\t\n\tp2\t\t\n";
    let r = import(&d, "/import/teams", good.to_string()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(names(&d.get("/teams/t1/members").await["members"]), ["p1"]);
    let sets = "set\titem\ttype\ns\tpkg\tpackage\n";
    let r = import(&d, "/import/packagesets", sets.to_string()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        names(&d.get("/packagesets/s/packages").await["packages"]),
        ["pkg"]
    );
    let r = import(
        &d,
        "/import/packagesets",
        "set\titem\ttype\ns\tpkg\tbogus\n".to_string(),
    )
    .await;
    assert_eq!(r.status(), 400);
    d.stop().await;
}

/// The persons in `team` by BFS over the active edges of `g`.
fn bfs_persons(g: &Generated, team: usize) -> BTreeSet<String> {
    let mut children: HashMap<usize, Vec<Member>> = HashMap::new();
    for e in &g.edges {
        if e.expires.is_none_or(|at| at > g.now) {
            children.entry(e.team).or_default().push(e.member);
        }
    }
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::from([team]);
    let mut queue = VecDeque::from([team]);
    while let Some(t) = queue.pop_front() {
        for m in children.get(&t).into_iter().flatten() {
            match *m {
                Member::Person(p) => {
                    out.insert(g.persons[p].clone());
                }
                Member::Team(c) => {
                    if seen.insert(c) {
                        queue.push_back(c);
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn a_generated_graph_imports_and_answers_like_bfs() {
    let d = Dir::memory(Access::default()).await;
    let g = Generated::new(&Shape::scaled(100));
    assert_eq!(g.now, NOW);
    let r = import(&d, "/import/teams", g.to_tsv()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let mut sample: Vec<usize> = g.special_roots.clone();
    sample.extend((0..g.teams.len()).step_by(g.teams.len() / 20 + 1));
    for team in sample {
        let expected = bfs_persons(&g, team);
        let got = d
            .get(&format!("/teams/{}/members?type=person", g.teams[team]))
            .await;
        let got: BTreeSet<String> = names(&got["members"]).into_iter().collect();
        assert_eq!(got, expected, "team {}", g.teams[team]);
        // Person-in-team checks agree, for a member and a non-member.
        if let Some(person) = expected.iter().next() {
            let check = d
                .get(&format!("/teams/{}/members/{person}", g.teams[team]))
                .await;
            assert_eq!(check["member"], true);
            let path = names(&check["path"]);
            assert_eq!(path.first(), Some(person));
            assert_eq!(path.last(), Some(&g.teams[team]));
        }
        if let Some(outsider) = g.persons.iter().find(|p| !expected.contains(*p)) {
            let check = d
                .get(&format!("/teams/{}/members/{outsider}", g.teams[team]))
                .await;
            assert_eq!(check["member"], false);
        }
    }
    d.stop().await;
}

/// The whole list of a large team (its answer is kept while the team's members do not
/// change) follows a membership added and removed, and its pages cut it exactly; the fast
/// path's answers equal the router's (a query the fast path does not take goes to the router).
#[tokio::test]
async fn a_large_team_list_follows_changes_and_pages_cut_it() {
    let d = Dir::memory(Access::default()).await;
    let g = Generated::new(&Shape::scaled(20));
    let r = import(&d, "/import/teams", g.to_tsv()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let big = &g.teams[g.special_roots[0]];
    let whole = format!("/teams/{big}/members?type=person");
    let before = names(&d.get(&whole).await["members"]);
    assert_eq!(before.len(), 18_000 / 20);
    assert!(before.windows(2).all(|w| w[0] < w[1]), "sorted by name");
    assert_eq!(names(&d.get(&whole).await["members"]), before);

    // A person joins the big team (sorting first) and leaves again.
    let put = d
        .put(
            &format!("/teams/{big}/members/aaa-first"),
            Some(json!({"role": "member"})),
        )
        .await;
    assert!(put.status().is_success(), "{}", put.status());
    let during = names(&d.get(&whole).await["members"]);
    assert_eq!(during.len(), before.len() + 1);
    assert_eq!(during[0], "aaa-first");
    assert_eq!(&during[1..], &before[..]);
    let (status, _) = d
        .status(
            reqwest::Method::DELETE,
            &format!("/teams/{big}/members/aaa-first"),
        )
        .await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(names(&d.get(&whole).await["members"]), before);

    // Pages of 100 from cursor to cursor give the whole list.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after
            .as_ref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let page = d.get(&format!("{whole}&limit=100{cursor}")).await;
        paged.extend(names(&page["members"]));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, before);

    // Fast path and router agree.
    let heavy = &g.persons[g.heavy_person];
    let fast = d.get(&format!("/persons/{heavy}/teams")).await;
    let routed = d
        .get(&format!("/persons/{heavy}/teams?transitive=true"))
        .await;
    assert_eq!(fast, routed);
    assert!(names(&fast["teams"]).len() >= 300);
    let all_fast = d.get(&format!("/teams/{big}/members")).await;
    let all_routed = d
        .get(&format!("/teams/{big}/members?type=all&transitive=true"))
        .await;
    assert_eq!(all_fast, all_routed);
    d.stop().await;
}
