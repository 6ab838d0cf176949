// Test-only, long on purpose: the directory's end-to-end scenarios share one server setup and
// its socket and curl helpers.
//! The directory end to end over real sockets, with reqwest and curl.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use engine::Engine;
use graphdb::generate::{Generated, Member, Shape};
use graphdb::{GraphStore, ManualClock};
use serde_json::{json, Value};
use servers::common::access::hash_password;
use servers::common::{serve, Credential, ServerConfig};
use servers::directory::{self, Directory};
use tokio::sync::oneshot;

use crate::support::{client, error_code, PASSWORD, USER};

const NOW: i64 = 1_800_000_000;

pub(crate) struct Dir {
    pub(crate) addr: SocketAddr,
    clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub(crate) struct Access {
    pub(crate) open_reads: bool,
    pub(crate) allowed: Vec<ipnet::IpNet>,
    /// `server.callback_hosts`, for subscriptions.
    pub(crate) callback_hosts: Vec<String>,
    /// `store.max_import_edges` (`None`: the default).
    pub(crate) max_import_edges: Option<usize>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            open_reads: false,
            allowed: servers::common::config::loopback_cidrs(),
            callback_hosts: Vec::new(),
            max_import_edges: None,
        }
    }
}

impl Dir {
    pub(crate) async fn start(engine: Arc<dyn Engine>, access: Access) -> Dir {
        let clock = Arc::new(ManualClock::at_seconds(NOW));
        let store = GraphStore::builder(Arc::clone(&engine))
            .clock(clock.clone())
            .open()
            .unwrap();
        let commits = servers::directory::config::open_commit_graphs(&store, engine).unwrap();
        let config = ServerConfig {
            credentials: vec![Credential {
                user: USER.into(),
                hash: hash_password(PASSWORD),
            }],
            open_reads: access.open_reads,
            allowed_cidrs: access.allowed,
            callback_hosts: access.callback_hosts,
            ..ServerConfig::default()
        };
        let mut state = Directory::new(store, commits, &config).unwrap();
        if let Some(max) = access.max_import_edges {
            state = state.with_max_import_edges(max);
        }
        let app = directory::router(state);
        let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::serve(listener, app, config.limits, async {
            let _ = rx.await;
        }));
        Dir {
            addr,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) async fn memory(access: Access) -> Dir {
        Dir::start(
            engine::EngineConfig::memory()
                .open(&directory::config::keyspaces())
                .unwrap(),
            access,
        )
        .await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub(crate) async fn put(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = client()
            .put(self.url(path))
            .basic_auth(USER, Some(PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let response = client()
            .get(self.url(path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub(crate) async fn status(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let response = client()
            .request(method, self.url(path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let code = if status >= 400 {
            error_code(response).await
        } else {
            String::new()
        };
        (status, code)
    }
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

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

pub(crate) async fn import(d: &Dir, path: &str, body: String) -> reqwest::Response {
    client()
        .post(d.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/tab-separated-values")
        .body(body)
        .send()
        .await
        .unwrap()
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

#[tokio::test]
async fn access_rules() {
    let d = Dir::memory(Access::default()).await;
    assert_eq!(
        d.put("/teams/t/members/p", Some(json!({"role": "member"})))
            .await
            .status(),
        200
    );
    let c = client();
    let r = c.get(d.url("/teams/t/members")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .put(d.url("/persons/q"))
        .basic_auth(USER, Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(c.get(d.url("/health")).send().await.unwrap().status(), 200);
    d.stop().await;

    let open = Dir::memory(Access {
        open_reads: true,
        ..Access::default()
    })
    .await;
    assert_eq!(
        open.put("/teams/t/members/p", Some(json!({"role": "member"})))
            .await
            .status(),
        200
    );
    let r = c.get(open.url("/teams/t/members")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.put(open.url("/persons/q")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    open.stop().await;

    let closed = Dir::memory(Access {
        allowed: vec!["192.0.2.0/24".parse().unwrap()],
        ..Access::default()
    })
    .await;
    for path in ["/health", "/teams/t/members", "/metrics"] {
        let r = c
            .get(closed.url(path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(error_code(r).await, "forbidden_address");
    }
    closed.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        engine::EngineConfig::rocksdb(dir.path())
            .open(&directory::config::keyspaces())
            .unwrap()
    };
    {
        let d = Dir::start(open(), Access::default()).await;
        assert_eq!(d.put("/teams/b", None).await.status(), 200);
        assert_eq!(
            d.put("/teams/a/members/b", Some(json!({"role": "member"})))
                .await
                .status(),
            200
        );
        assert_eq!(
            d.put(
                "/teams/b/members/p",
                Some(json!({"role": "admin", "expires": NOW + 10}))
            )
            .await
            .status(),
            200
        );
        assert_eq!(
            d.put("/teams/b/members/q", Some(json!({"role": "member"})))
                .await
                .status(),
            200
        );
        assert_eq!(d.put("/packagesets/s/items/pkg", None).await.status(), 200);
        let r = post_text(
            &d,
            "/repos/r/commits",
            format!("{} {}\n{}\n", c(2), c(1), c(1)),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            d.put("/repos/r/branches/main", Some(json!({"tip": c(2)})))
                .await
                .status(),
            200
        );
        assert_eq!(
            d.put("/repos/r/branches/old", Some(json!({"tip": c(1)})))
                .await
                .status(),
            200
        );
        d.stop().await;
    }
    let d = Dir::start(open(), Access::default()).await;
    assert_eq!(
        names(&d.get("/teams/a/members?type=person").await["members"]),
        ["p", "q"]
    );
    assert_eq!(
        names(&d.get("/teams/a/members/p").await["path"]),
        ["p", "b", "a"]
    );
    assert_eq!(
        names(&d.get("/packagesets/s/packages").await["packages"]),
        ["pkg"]
    );
    d.clock.set_seconds(NOW + 10);
    assert_eq!(
        names(&d.get("/teams/a/members?type=person").await["members"]),
        ["q"]
    );
    d.stop().await;
}

#[tokio::test]
async fn curl_and_the_openapi_document() {
    let d = Dir::memory(Access::default()).await;
    let url = d.url("/teams/ubuntu/members/alice");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "--silent",
                "--fail",
                "-X",
                "PUT",
                "-u",
                &format!("{USER}:{PASSWORD}"),
            ])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"role": "member"}"#,
            ])
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = d.url("/teams/ubuntu/members");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["--silent", "--fail", "-u", &format!("{USER}:{PASSWORD}")])
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(names(&body["members"]), ["alice"]);

    let doc = d.get("/openapi.json").await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes: BTreeSet<(String, String)> = directory::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routes);
    for (method, path) in &routes {
        let concrete = path
            .replace("{team}", "ubuntu")
            .replace("{member}", "alice")
            .replace("{person}", "alice")
            .replace("{relation}", "audits")
            .replace("{set}", "s")
            .replace("{item}", "i")
            .replace("{package}", "i")
            .replace("{repo}", "r")
            .replace("{branch}", "main")
            .replace("{target}", "main")
            .replace("{graph}", "g")
            .replace("{from}", "a")
            .replace("{to}", "b")
            .replace("{node}", "a");
        let (status, code) = d.status(method.parse().unwrap(), &concrete).await;
        assert_ne!(status, 405, "{method} {path}");
        assert_ne!(code, "no_route", "{method} {path}");
    }
    d.stop().await;
}

/// The 40-hex id of commit `n`.
fn c(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

async fn post_text(d: &Dir, path: &str, body: String) -> reqwest::Response {
    client()
        .post(d.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn repositories_and_merged_status() {
    let d = Dir::memory(Access::default()).await;
    // rev-list order: children first. 4 merges 2 and 3, both children of 1.
    let rev_list = format!(
        "{} {} {}\n{} {}\n{} {}\n{}\n",
        c(4),
        c(2),
        c(3),
        c(3),
        c(1),
        c(2),
        c(1),
        c(1)
    );
    // A malformed line is refused whole.
    let bad = format!("{}\n{} zz\n", c(1), c(2));
    let r = post_text(&d, "/repos/lp/commits", bad).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_import");
    assert_eq!(body["error"]["line"], 2);
    let r = post_text(&d, "/repos/lp/commits", format!("{} {}\n", c(9), c(8))).await;
    assert_eq!(r.status(), 400);
    let r = post_text(&d, "/repos/lp/commits", rev_list.clone()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["added"], 4);

    assert_eq!(
        d.put("/repos/lp/branches/main", Some(json!({"tip": c(2)})))
            .await
            .status(),
        200
    );
    let r = d
        .put("/repos/lp/branches/topic", Some(json!({"tip": c(3)})))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        d.get("/repos/lp/branches/topic/merged-into/main").await["merged"],
        false
    );
    assert_eq!(
        names(&d.get("/repos/lp/branches/main/merged").await["merged"]),
        Vec::<String>::new()
    );
    // Moving main to the merge reports that topic became merged.
    let r = d
        .put("/repos/lp/branches/main", Some(json!({"tip": c(4)})))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["changes"],
        json!([{"branch": "topic", "target": "main", "merged": true}])
    );
    assert_eq!(
        d.get("/repos/lp/branches/topic/merged-into/main").await["merged"],
        true
    );
    assert_eq!(
        d.get("/repos/lp/branches/main/merged-into/topic").await["merged"],
        false
    );
    assert_eq!(
        names(&d.get("/repos/lp/branches/main/merged").await["merged"]),
        ["topic"]
    );
    let q = |a: u8, b: u8| format!("/repos/lp/ancestry?ancestor={}&descendant={}", c(a), c(b));
    assert_eq!(d.get(&q(3, 4)).await["ancestor"], true);
    assert_eq!(d.get(&q(4, 3)).await["ancestor"], false);
    assert_eq!(d.get(&q(2, 3)).await["ancestor"], false);
    // Errors.
    assert_eq!(
        d.status(reqwest::Method::GET, &q(7, 4)).await,
        (404, "not_found".into())
    );
    assert_eq!(
        d.status(
            reqwest::Method::GET,
            "/repos/lp/ancestry?ancestor=xyz&descendant=abc"
        )
        .await,
        (400, "bad_hex".into())
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/repos/lp/ancestry").await.0,
        400
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/repos/lp/branches/nope/merged")
            .await
            .0,
        404
    );
    let r = d
        .put("/repos/lp/branches/x", Some(json!({"tip": c(7)})))
        .await;
    assert_eq!(r.status(), 404);
    let r = d
        .put("/repos/lp/branches/x", Some(json!({"tip": "nothex"})))
        .await;
    assert_eq!(r.status(), 400);
    // Deleting.
    let r = client()
        .delete(d.url("/repos/lp/branches/topic"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        names(&d.get("/repos/lp/branches/main/merged").await["merged"]),
        Vec::<String>::new()
    );
    assert_eq!(
        d.status(reqwest::Method::DELETE, "/repos/lp/branches/topic")
            .await
            .0,
        404
    );

    // A bulk import: rev-list, an empty line, refs.
    let body = format!(
        "{rev_list}\nrefs/heads/main {}\nrefs/heads/feature {}\nrefs/tags/v1 {}\n",
        c(4),
        c(3),
        c(1)
    );
    let r = post_text(&d, "/import/repos/other", body).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        names(&d.get("/repos/other/branches/main/merged").await["merged"]),
        ["feature"]
    );
    // Repositories are apart.
    assert_eq!(
        d.status(reqwest::Method::GET, "/repos/third/branches/main/merged")
            .await
            .0,
        404
    );
    d.stop().await;
}

/// The revision of a write's answer: `X-Revision` and `revision` in the JSON, equal.
async fn revision_of(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 200);
    let header: u64 = response.headers()["x-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revision"], header, "{body}");
    header
}

#[tokio::test]
async fn repository_writes_answer_revisions_and_branch_history_pages() {
    let d = Dir::memory(Access::default()).await;
    let rev_list = format!("{} {}\n{} {}\n{}\n", c(3), c(1), c(2), c(1), c(1));
    let pushed = revision_of(post_text(&d, "/repos/hist/commits", rev_list).await).await;
    assert_eq!(pushed, 1);
    let main = revision_of(
        d.put("/repos/hist/branches/main", Some(json!({"tip": c(2)})))
            .await,
    )
    .await;
    let topic = revision_of(
        d.put("/repos/hist/branches/topic", Some(json!({"tip": c(3)})))
            .await,
    )
    .await;
    let moved = revision_of(
        d.put("/repos/hist/branches/topic", Some(json!({"tip": c(1)})))
            .await,
    )
    .await;
    assert_eq!((main, topic, moved), (2, 3, 4));
    let deleted = client()
        .delete(d.url("/repos/hist/branches/topic"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(revision_of(deleted).await, 5);
    // A re-push of known commits records nothing and answers the head.
    let again = post_text(&d, "/repos/hist/commits", format!("{}\n", c(1))).await;
    assert_eq!(revision_of(again).await, 5);

    // The whole history of topic, then page by page.
    let page = d.get("/repos/hist/branches/topic/history").await;
    let kinds: Vec<(u64, String)> = page["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (3, "branch.set".to_string()),
            (4, "branch.set".to_string()),
            (5, "branch.deleted".to_string())
        ]
    );
    assert_eq!(page["next"], Value::Null);
    let first = &page["history"][0];
    assert_eq!(first["actor"], USER);
    assert_eq!(first["repo"], "hist");
    assert_eq!(first["branch"], "topic");
    assert_eq!(first["before"], Value::Null);
    assert_eq!(first["after"], c(3));
    assert_eq!(page["history"][1]["before"], c(3));
    // topic moved onto main's ancestor: merged into main now.
    assert_eq!(
        page["history"][1]["changes"],
        json!([{"branch": "topic", "target": "main", "merged": true}])
    );
    let one = d.get("/repos/hist/branches/topic/history?limit=2").await;
    assert_eq!(one["history"].as_array().unwrap().len(), 2);
    assert_eq!(one["next"], 4);
    let two = d
        .get("/repos/hist/branches/topic/history?after=4&limit=2")
        .await;
    assert_eq!(two["history"][0]["revision"], 5);
    assert_eq!(two["next"], Value::Null);
    // main's history has only its own move; a branch that never existed has none.
    let main_history = d.get("/repos/hist/branches/main/history").await;
    assert_eq!(main_history["history"].as_array().unwrap().len(), 1);
    let none = d.get("/repos/hist/branches/nothing/history").await;
    assert!(none["history"].as_array().unwrap().is_empty());
    // Bad queries.
    for query in ["after=x", "limit=0", "limit=1001", "color=red"] {
        let (status, code) = d
            .status(
                reqwest::Method::GET,
                &format!("/repos/hist/branches/topic/history?{query}"),
            )
            .await;
        assert_eq!((status, code.as_str()), (400, "bad_query"), "{query}");
    }
    d.stop().await;
}
