// Test-only: the directory's end-to-end scenarios share this server setup and its socket and
// curl helpers; team and package-set routes are in `teams.rs`, repositories in `repos.rs`.
//! The directory end to end over real sockets, with reqwest and curl.

mod fast_http;
mod repos;
mod teams;

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
    /// `server.limits`.
    pub(crate) limits: servers::common::Limits,
    /// `server.trusted_proxies`.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            open_reads: false,
            allowed: servers::common::config::loopback_cidrs(),
            callback_hosts: Vec::new(),
            max_import_edges: None,
            limits: servers::common::Limits::default(),
            trusted_proxies: Vec::new(),
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
            limits: access.limits,
            trusted_proxies: access.trusted_proxies,
            ..ServerConfig::default()
        };
        let mut state = Directory::new(store, commits, &config).unwrap();
        if let Some(max) = access.max_import_edges {
            state = state.with_max_import_edges(max);
        }
        let app = directory::app(state);
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
