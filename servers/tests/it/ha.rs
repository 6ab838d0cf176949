// Test-only, long on purpose: the PostgreSQL and election scenarios share one set of process
// and database helpers.
//! Both servers on PostgreSQL (`store.backend = "postgres"`), the settings they refuse, and
//! the election of one writer among several instances (`common::leader`): `/health/writer`,
//! `503 not_leader` with `Retry-After` on the others, a graceful stop handing over at once, in
//! process and with three `directory serve` processes (SIGTERM twice, then SIGKILL).
//! The PostgreSQL tests run against `LPSTORE_TEST_POSTGRES` (`scripts/with-postgres.sh`), each
//! in a schema of its own, and skip themselves (saying so) without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::testing::{skip, PgScratch};
use engine::{Backend, Engine};
use serde_json::json;
use servers::common::access::hash_password;
use servers::common::{serve, Credential, Leader, ServerConfig};
use servers::directory::{self, Directory, DirectoryConfig};
use servers::librarian::{self, Librarian};
use tokio::sync::oneshot;

use crate::support::{client, error_code, PASSWORD, USER};

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A server on `127.0.0.1:0` until dropped or stopped.
pub(crate) struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub(crate) async fn start(app: axum::Router) -> Self {
        let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::serve(
            listener,
            app,
            servers::common::Limits::default(),
            async {
                let _ = rx.await;
            },
        ));
        Running {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub(crate) async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        let mut request = client()
            .request(method.clone(), self.url(path))
            .basic_auth(USER, Some(PASSWORD));
        if method == reqwest::Method::PUT && path.contains("/members/") {
            request = request.json(&json!({"role": "member"}));
        }
        request.send().await.unwrap()
    }
}

pub(crate) fn server_config() -> ServerConfig {
    ServerConfig {
        credentials: vec![Credential {
            user: USER.into(),
            hash: hash_password(PASSWORD),
        }],
        ..ServerConfig::default()
    }
}

/// The directory's settings on the scratch schema, as an operator writes them.
pub(crate) fn directory_config(scratch: &PgScratch, url: &str) -> DirectoryConfig {
    toml::from_str(&format!(
        "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\nschema = {:?}\nretry_ms = 2000\n",
        url,
        scratch.schema()
    ))
    .unwrap()
}

/// The engines and stores of a test, dropped after its runtime: PostgreSQL's synchronous
/// client must not close its connections on an async thread, nor may a store write (the
/// blob store flushes its download counts when dropped).
#[derive(Default)]
pub(crate) struct Keep(std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>);

impl Keep {
    pub(crate) fn engine(&self, engine: &Arc<dyn Engine>) {
        self.0.lock().unwrap().push(Box::new(Arc::clone(engine)));
    }

    fn store(&self, store: &blobstore::Store) {
        self.0.lock().unwrap().push(Box::new(store.clone()));
    }

    fn librarian(&self, state: &Librarian) {
        self.0.lock().unwrap().push(Box::new(state.clone()));
    }
}

/// Opens the directory's stores (blocking: PostgreSQL's client) off the runtime.
async fn open_directory(config: DirectoryConfig, keep: &Keep) -> anyhow::Result<Directory> {
    let directory = tokio::task::spawn_blocking(move || {
        let (store, commits) = config.store.open()?;
        anyhow::Ok(Directory::new(store, commits, &server_config())?)
    })
    .await
    .unwrap()?;
    keep.engine(directory.store().engine());
    Ok(directory)
}

#[test]
fn the_directory_serves_from_postgres() {
    if skip(Backend::Postgres) {
        return;
    }
    // Created and dropped off the runtime: its client blocks.
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(the_directory_serves_from_postgres_on(&scratch, &keep));
}

async fn the_directory_serves_from_postgres_on(scratch: &PgScratch, keep: &Keep) {
    let state = open_directory(directory_config(scratch, &scratch.url()), keep)
        .await
        .unwrap();
    assert_eq!(state.store().engine().backend(), Backend::Postgres);
    let server = Running::start(directory::router(state)).await;
    use reqwest::Method;
    assert_eq!(
        server.send(Method::PUT, "/teams/core-dev").await.status(),
        200
    );
    assert_eq!(
        server
            .send(Method::PUT, "/teams/core-dev/members/alice")
            .await
            .status(),
        200
    );
    let answer: serde_json::Value = server
        .send(Method::GET, "/teams/core-dev/members/alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["member"], true);
    assert_eq!(server.send(Method::GET, "/health").await.status(), 200);
    // One instance on an unelected state writes: /health/writer says so.
    assert_eq!(
        server.send(Method::GET, "/health/writer").await.status(),
        200
    );
    server.stop().await;

    // A restart reads it back from the database.
    let state = open_directory(directory_config(scratch, &scratch.url()), keep)
        .await
        .unwrap();
    let server = Running::start(directory::router(state)).await;
    let answer: serde_json::Value = server
        .send(Method::GET, "/teams/core-dev/members/alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["member"], true);
    server.stop().await;
}

#[test]
fn the_librarian_serves_from_postgres() {
    if skip(Backend::Postgres) {
        return;
    }
    // Created and dropped off the runtime: its client blocks.
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(the_librarian_serves_from_postgres_on(&scratch, &keep));
}

async fn the_librarian_serves_from_postgres_on(scratch: &PgScratch, keep: &Keep) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let settings = scratch.settings();
    // One instance with local blob files: the in-process test's arrangement (`serve` refuses
    // PostgreSQL without [object_store], tested below).
    let store: blobstore::Store = tokio::task::spawn_blocking(move || {
        let engine = engine::EngineConfig::postgres(settings)
            .open(blobstore::KEYSPACES)
            .unwrap();
        blobstore::StoreBuilder::with_engine(engine, &path)
            .token_secrets([3; 32], None)
            .open()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(store.engine().backend(), Backend::Postgres);
    keep.engine(store.engine());
    keep.store(&store);
    // Librarian::new opens the feed's consumers in the engine: off the runtime too.
    let state = tokio::task::spawn_blocking(move || Librarian::new(store, &server_config()))
        .await
        .unwrap()
        .unwrap();
    keep.librarian(&state);
    let server = Running::start(librarian::router(state)).await;
    let body = crate::support::content(100_000, 7);
    let response = client()
        .post(server.url("/buckets/pg/files?filename=notes.txt"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let record: serde_json::Value = response.json().await.unwrap();
    let id = record["id"].as_u64().unwrap();
    let download = client()
        .get(server.url(&format!("/{id}/notes.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().to_vec(), body);
    let metadata = server
        .send(reqwest::Method::GET, &format!("/files/{id}"))
        .await;
    assert_eq!(metadata.status(), 200);
    server.stop().await;
}

#[test]
fn a_wrong_database_or_a_newer_schema_is_refused_naming_the_setting() {
    if skip(Backend::Postgres) {
        return;
    }
    // Created and dropped off the runtime: its client blocks.
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(
        a_wrong_database_or_a_newer_schema_is_refused_naming_the_setting_on(&scratch, &keep),
    );
}

async fn a_wrong_database_or_a_newer_schema_is_refused_naming_the_setting_on(
    scratch: &PgScratch,
    keep: &Keep,
) {
    let wrong = format!("{} dbname=lpstore_no_such_database", scratch.url());
    let error = open_directory(directory_config(scratch, &wrong), keep)
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("[store.postgres] url"), "{text}");
    assert!(text.contains("lpstore_no_such_database"), "{text}");

    open_directory(directory_config(scratch, &scratch.url()), keep)
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        scratch.admin(&format!(
            "UPDATE \"{}\".lpstore_meta SET value = 99 WHERE name = 'schema_version'",
            scratch.schema()
        ))
    });
    let error = open_directory(directory_config(scratch, &scratch.url()), keep)
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("newer than this build"), "{text}");
    assert!(text.contains("postgres.schema"), "{text}");
}

/// Two directories on one database, each with its election.
#[test]
fn one_directory_instance_writes_and_a_graceful_stop_hands_over() {
    if skip(Backend::Postgres) {
        return;
    }
    // Created and dropped off the runtime: its client blocks.
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime()
        .block_on(one_directory_instance_writes_and_a_graceful_stop_hands_over_on(&scratch, &keep));
}

async fn one_directory_instance_writes_and_a_graceful_stop_hands_over_on(
    scratch: &PgScratch,
    keep: &Keep,
) {
    use reqwest::Method;
    let ttl = Duration::from_millis(900);
    let mut instances = Vec::new();
    for _ in 0..2 {
        let state = open_directory(directory_config(scratch, &scratch.url()), keep)
            .await
            .unwrap();
        let engine: Arc<dyn Engine> = state.store().engine().clone();
        let leader = Leader::elect(engine, "directory", ttl);
        assert!(leader.holder().is_some());
        let state = state.with_leader(leader.clone());
        leader.start();
        instances.push((leader, Running::start(directory::router(state)).await));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let leading = loop {
        let leading: Vec<usize> = (0..2).filter(|i| instances[*i].0.is_leader()).collect();
        if leading.len() == 1 {
            break leading[0];
        }
        assert!(leading.len() < 2, "two leaders");
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = 1 - leading;
    let (leader, server) = &instances[leading];
    let (_, other) = &instances[follower];
    assert_eq!(
        server.send(Method::GET, "/health/writer").await.status(),
        200
    );
    let first_epoch = leader.epoch().unwrap();
    let answer = other.send(Method::GET, "/health/writer").await;
    assert_eq!(answer.status(), 503);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "follower");

    // Writes: at the leader; the follower answers 503 not_leader with Retry-After, after
    // checking the credentials; its reads are served.
    assert_eq!(server.send(Method::PUT, "/teams/first").await.status(), 200);
    let refused = other.send(Method::PUT, "/teams/second").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "not_leader");
    let anonymous = client()
        .put(other.url("/teams/second"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // (Served from the follower's memory, which does not follow the feed yet: team `first`
    // may be unknown there, but the read is answered, not refused.)
    let read = other
        .send(Method::GET, "/teams/first/members")
        .await
        .status();
    assert_ne!(read, 503);
    assert_eq!(other.send(Method::GET, "/health").await.status(), 200);

    // A graceful stop releases the lease: the other instance leads within a round (ttl/3),
    // long before the lease would have expired, at a larger epoch.
    let started = Instant::now();
    leader.stop().await;
    assert!(!leader.is_leader());
    let (new_leader, new_server) = &instances[follower];
    while !new_leader.is_leader() {
        assert!(
            started.elapsed() < ttl * 3,
            "no takeover after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("takeover after a graceful stop: {:?}", started.elapsed());
    assert!(new_leader.epoch().unwrap() > first_epoch);
    assert_eq!(
        new_server
            .send(Method::GET, "/health/writer")
            .await
            .status(),
        200
    );
    assert_eq!(
        server.send(Method::GET, "/health/writer").await.status(),
        503
    );
    assert_eq!(
        new_server.send(Method::PUT, "/teams/second").await.status(),
        200
    );
    assert_eq!(server.send(Method::PUT, "/teams/third").await.status(), 503);
    for (leader, server) in instances {
        leader.stop().await;
        server.stop().await;
    }
}

#[test]
fn one_librarian_instance_writes_and_every_one_reads() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(one_librarian_instance_writes_and_every_one_reads_on(
        &scratch, &keep,
    ));
}

async fn one_librarian_instance_writes_and_every_one_reads_on(scratch: &PgScratch, keep: &Keep) {
    use reqwest::Method;
    let ttl = Duration::from_millis(900);
    let dir = tempfile::tempdir().unwrap();
    let mut instances = Vec::new();
    for i in 0..2 {
        let settings = scratch.settings();
        let path = dir.path().join(format!("instance-{i}"));
        let store: blobstore::Store = tokio::task::spawn_blocking(move || {
            let engine = engine::EngineConfig::postgres(settings)
                .open(blobstore::KEYSPACES)
                .unwrap();
            blobstore::StoreBuilder::with_engine(engine, &path)
                .token_secrets([3; 32], None)
                .open()
                .unwrap()
        })
        .await
        .unwrap();
        keep.engine(store.engine());
        keep.store(&store);
        let leader = Leader::elect(store.engine().clone(), "librarian", ttl);
        let state = tokio::task::spawn_blocking(move || Librarian::new(store, &server_config()))
            .await
            .unwrap()
            .unwrap()
            .with_leader(leader.clone());
        keep.librarian(&state);
        leader.start();
        instances.push((leader, Running::start(librarian::router(state)).await));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let leading = loop {
        let leading: Vec<usize> = (0..2).filter(|i| instances[*i].0.is_leader()).collect();
        if leading.len() == 1 {
            break leading[0];
        }
        assert!(leading.len() < 2, "two leaders");
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, writer) = &instances[leading];
    let (_, follower) = &instances[1 - leading];
    let upload = |server: &Running| {
        client()
            .post(server.url("/buckets/ha/files?filename=small.txt"))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "text/plain")
            .body(b"4 KiB or less: inline, in the database".to_vec())
            .send()
    };
    let refused = upload(follower).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "not_leader");
    let created = upload(writer).await.unwrap();
    assert_eq!(created.status(), 201);
    let record: serde_json::Value = created.json().await.unwrap();
    let id = record["id"].as_u64().unwrap();
    assert_eq!(
        follower
            .send(Method::DELETE, &format!("/files/{id}"))
            .await
            .status(),
        503
    );
    // Reads on the follower: the record and the inline content come from the database.
    assert_eq!(
        follower
            .send(Method::GET, &format!("/files/{id}"))
            .await
            .status(),
        200
    );
    let download = client()
        .get(follower.url(&format!("/{id}/small.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.bytes().await.unwrap().as_ref(),
        b"4 KiB or less: inline, in the database"
    );
    assert_eq!(
        follower.send(Method::GET, "/health/writer").await.status(),
        503
    );
    assert_eq!(
        writer.send(Method::GET, "/health/writer").await.status(),
        200
    );
    for (leader, server) in instances {
        leader.stop().await;
        server.stop().await;
    }
}

/// `directory serve` processes on one database: `/health/writer` over curl.
fn writer_status(addr: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/health/writer"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Starts `directory --config FILE serve --dev` on an ephemeral port.
fn serve_directory(config: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_directory"))
        .arg("--config")
        .arg(config)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the directory exited early").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[test]
fn directory_processes_hand_the_writer_over_on_sigterm_and_sigkill() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("directory.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlease_ttl_ms = 900\n[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\nschema = {:?}\n",
            scratch.url(),
            scratch.schema()
        ),
    )
    .unwrap();
    let mut running: Vec<(std::process::Child, String)> =
        (0..3).map(|_| serve_directory(&config)).collect();
    let leader_of = |running: &[(std::process::Child, String)]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leading: Vec<usize> = (0..running.len())
                .filter(|i| writer_status(&running[*i].1) == 200)
                .collect();
            assert!(leading.len() < 2, "two writers: {leading:?}");
            if let [one] = leading[..] {
                return one;
            }
            assert!(Instant::now() < deadline, "no writer");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for round in 0..2 {
        let leading = leader_of(&running);
        let put = |addr: &str, team: &str| {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("http://{addr}/teams/{team}"))
                .output()
                .unwrap()
                .stdout
        };
        assert_eq!(put(&running[leading].1, &format!("t{round}")), b"200");
        let other = (leading + 1) % running.len();
        assert_eq!(put(&running[other].1, "refused"), b"503");
        let (child, _) = running.remove(leading);
        let started = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let next = leader_of(&running);
        let handover = started.elapsed();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "exit {:?}", out.status);
        eprintln!("round {round}: a new writer {handover:?} after SIGTERM");
        // Released, not expired: well within the 900 ms lease plus a 300 ms round.
        assert!(handover < Duration::from_millis(1100), "{handover:?}");
        assert_eq!(put(&running[next].1, &format!("after{round}")), b"200");
    }
    // SIGKILL: nothing released; the lease expires (900 ms) and another instance's next round
    // (every 300 ms) takes it over.
    running.push(serve_directory(&config));
    let leading = leader_of(&running);
    let (mut child, _) = running.remove(leading);
    let started = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    leader_of(&running);
    let failover = started.elapsed();
    eprintln!("a new writer {failover:?} after SIGKILL");
    assert!(failover < Duration::from_secs(3), "{failover:?}");
    for (child, _) in running {
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
    }
}

// ---- Followers: three instances of each server on one database (`common::follow`) ----

/// `n` directories on one database (connection string `url`), each with its election
/// (leases of 900 ms), and the index of the one elected.
async fn directories(
    scratch: &PgScratch,
    url: &str,
    keep: &Keep,
    n: usize,
) -> (Vec<(Leader, Running)>, usize) {
    let mut instances = Vec::new();
    for _ in 0..n {
        let state = open_directory(directory_config(scratch, url), keep)
            .await
            .unwrap();
        let leader = Leader::elect(
            state.store().engine().clone(),
            "directory",
            Duration::from_millis(900),
        );
        let state = state.with_leader(leader.clone());
        leader.start();
        instances.push((leader, Running::start(directory::router(state)).await));
    }
    let leading = elected(&instances).await;
    (instances, leading)
}

/// Waits for exactly one of `instances` to lead (20 s at most); never two.
pub(crate) async fn elected(instances: &[(Leader, Running)]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leading: Vec<usize> = (0..instances.len())
            .filter(|i| instances[*i].0.is_leader())
            .collect();
        assert!(leading.len() < 2, "two leaders: {leading:?}");
        if let [one] = leading[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `method path` at the leader, again (at the leader then) while it answers 503, as HAProxy
/// would: on a loaded machine a renewal may come late and the leader step aside briefly.
pub(crate) async fn at_leader(
    instances: &[(Leader, Running)],
    method: reqwest::Method,
    path: &str,
) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leading = elected(instances).await;
        let response = instances[leading].1.send(method.clone(), path).await;
        if response.status() != 503 || Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A write's `X-Revision`.
pub(crate) fn revision_of(response: &reqwest::Response) -> u64 {
    response.headers()["x-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn get_json(server: &Running, path: &str) -> (u16, serde_json::Value) {
    let response = server.send(reqwest::Method::GET, path).await;
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn directory_followers_serve_the_leaders_writes() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(directory_followers_serve_the_leaders_writes_on(
        &scratch, &keep,
    ));
}

async fn directory_followers_serve_the_leaders_writes_on(scratch: &PgScratch, keep: &Keep) {
    use reqwest::Method;
    let (instances, leading) = directories(scratch, &scratch.url(), keep, 3).await;
    let writer = &instances[leading].1;
    let followers: Vec<&Running> = (0..3)
        .filter(|i| *i != leading)
        .map(|i| &instances[i].1)
        .collect();

    // With min_revision: visible on both followers at once.
    let written = at_leader(&instances, Method::PUT, "/teams/core-dev/members/alice").await;
    assert_eq!(written.status(), 200);
    let revision = revision_of(&written);
    for follower in &followers {
        let (status, answer) = get_json(
            follower,
            &format!("/teams/core-dev/members/alice?min_revision={revision}"),
        )
        .await;
        assert_eq!((status, &answer["member"]), (200, &json!(true)), "{answer}");
        let answer: serde_json::Value = client()
            .get(follower.url("/persons/alice/teams"))
            .basic_auth(USER, Some(PASSWORD))
            .header("x-min-revision", revision.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.to_string().contains("core-dev"), "{answer}");
    }

    // Commit graphs: a push and a branch on the leader, ancestry on the followers.
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let pushed = client()
        .post(writer.url("/repos/linux/commits"))
        .basic_auth(USER, Some(PASSWORD))
        .body(format!("{b} {a}\n{a}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200, "{:?}", pushed.text().await);
    let pushed = revision_of(&pushed);
    for follower in &followers {
        let (status, answer) = get_json(
            follower,
            &format!("/repos/linux/ancestry?ancestor={a}&descendant={b}&min_revision={pushed}"),
        )
        .await;
        assert_eq!(
            (status, &answer["ancestor"]),
            (200, &json!(true)),
            "{answer}"
        );
    }

    // Without min_revision: visible within the followers' polling (5 ms) and applying.
    let written = at_leader(&instances, Method::PUT, "/teams/core-dev/members/bob").await;
    let revision = revision_of(&written);
    let started = Instant::now();
    for follower in &followers {
        loop {
            let (_, answer) = get_json(follower, "/teams/core-dev/members/bob").await;
            if answer["member"] == json!(true) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never applied");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (_, health) = get_json(follower, "/health").await;
        assert_eq!(health["stale"], false, "{health}");
        assert_eq!(health["role"], "follower", "{health}");
        assert!(health["revision"].as_u64().unwrap() >= revision, "{health}");
    }
    let (_, health) = get_json(writer, "/health").await;
    assert_eq!(health["role"], "leader", "{health}");
    eprintln!(
        "both followers applied a write {:?} after it was acknowledged",
        started.elapsed()
    );

    // min_revision beyond the head: 503 behind with Retry-After, after the 2 s wait.
    let started = Instant::now();
    let response = followers[0]
        .send(
            Method::GET,
            &format!(
                "/teams/core-dev/members/bob?min_revision={}",
                revision + 1000
            ),
        )
        .await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "behind", "{body}");
    assert_eq!(body["error"]["revision"], revision, "{body}");
    // The same with the header, on a route the fast path answers without it.
    let response = client()
        .get(followers[0].url("/teams/core-dev/members/bob"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-min-revision", (revision + 1000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "the fast path waits too");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "behind", "{body}");
    let bad = followers[0]
        .send(Method::GET, "/teams/core-dev/members/bob?min_revision=soon")
        .await;
    assert_eq!(bad.status(), 400);

    // Fenced: the lease moves behind the leader's back (another epoch), so its next write
    // is refused by the database: 503 not_leader, nothing recorded, no revision taken.
    tokio::task::block_in_place(|| {
        scratch.admin(&format!(
            "UPDATE \"{}\".lpstore_leases SET epoch = epoch + 1 WHERE name = 'directory'",
            scratch.schema()
        ))
    });
    let head_before = instances[leading].1.send(Method::GET, "/health").await;
    let head_before: serde_json::Value = head_before.json().await.unwrap();
    let head_before = head_before["revision"].as_u64().unwrap();
    let refused = writer.send(Method::PUT, "/teams/fenced").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "not_leader");
    // A leader again (the moved lease expires), which writes the next revision.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (next, after) = loop {
        let next = elected(&instances).await;
        let response = instances[next].1.send(Method::PUT, "/teams/after").await;
        if response.status() == 200 {
            break (next, revision_of(&response));
        }
        assert!(
            Instant::now() < deadline,
            "no write accepted after the fencing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // `after` created a team: one event, the next revision.
    assert_eq!(after, head_before + 1, "a gap or a reused revision");
    for (_, server) in &instances {
        let (status, _) = get_json(
            server,
            &format!("/teams/fenced/members?min_revision={after}"),
        )
        .await;
        assert_eq!(status, 404, "the refused write was recorded");
        let (status, _) = get_json(
            server,
            &format!("/teams/after/members?min_revision={after}"),
        )
        .await;
        assert_eq!(status, 200);
    }
    eprintln!("instance {next} leads after the fencing");
    for (leader, server) in instances {
        leader.stop().await;
        server.stop().await;
    }
}

/// `n` librarians on one database (blob bytes inline, in the database), each with its
/// election, and the index of the one elected.
async fn librarians(
    scratch: &PgScratch,
    keep: &Keep,
    dir: &std::path::Path,
    n: usize,
) -> (Vec<(Leader, Running)>, usize) {
    let mut instances = Vec::new();
    for i in 0..n {
        let settings = scratch.settings();
        let path = dir.join(format!("instance-{i}"));
        let store: blobstore::Store = tokio::task::spawn_blocking(move || {
            let engine = engine::EngineConfig::postgres(settings)
                .open(blobstore::KEYSPACES)
                .unwrap();
            blobstore::StoreBuilder::with_engine(engine, &path)
                .token_secrets([3; 32], None)
                .open()
                .unwrap()
        })
        .await
        .unwrap();
        keep.engine(store.engine());
        keep.store(&store);
        let leader = Leader::elect(
            store.engine().clone(),
            "librarian",
            Duration::from_millis(900),
        );
        let state = tokio::task::spawn_blocking(move || Librarian::new(store, &server_config()))
            .await
            .unwrap()
            .unwrap()
            .with_leader(leader.clone());
        keep.librarian(&state);
        leader.start();
        instances.push((leader, Running::start(librarian::router(state)).await));
    }
    let leading = elected(&instances).await;
    (instances, leading)
}

#[test]
fn librarian_followers_drop_what_the_leader_changed_and_a_new_leader_continues() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(librarian_followers_on(&scratch, &keep));
}

async fn librarian_followers_on(scratch: &PgScratch, keep: &Keep) {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let (instances, leading) = librarians(scratch, keep, dir.path(), 3).await;
    let upload = |server: &Running, name: &str| {
        client()
            .post(server.url(&format!("/buckets/ha/files?filename={name}")))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "text/plain")
            .body(format!("the content of {name}"))
            .send()
    };
    let created = upload(&instances[leading].1, "one.txt").await.unwrap();
    assert_eq!(created.status(), 201);
    let revision = revision_of(&created);
    let record: serde_json::Value = created.json().await.unwrap();
    let first_id = record["id"].as_u64().unwrap();
    let download = |server: &Running, id: u64, at: Option<u64>| {
        let mut request = client().get(server.url(&format!("/{id}/one.txt")));
        if let Some(at) = at {
            request = request.header("x-min-revision", at.to_string());
        }
        request.send()
    };
    for (i, (_, server)) in instances.iter().enumerate() {
        // Twice: the second answer comes from the hot-file cache.
        for _ in 0..2 {
            let answer = download(server, first_id, Some(revision)).await.unwrap();
            assert_eq!(answer.status(), 200, "instance {i}");
            assert_eq!(answer.text().await.unwrap(), "the content of one.txt");
        }
    }
    // The leader deletes the file: no follower serves it from its cache afterwards.
    let deleted = at_leader(&instances, Method::DELETE, &format!("/files/{first_id}")).await;
    assert_eq!(deleted.status(), 204, "{:?}", deleted.text().await);
    let revision = revision_of(&deleted);
    for (i, (_, server)) in instances.iter().enumerate() {
        let answer = download(server, first_id, Some(revision)).await.unwrap();
        assert_eq!(answer.status(), 404, "instance {i} served a deleted file");
        // The fast path (no header) agrees once the instance has applied the deletion.
        let answer = download(server, first_id, None).await.unwrap();
        assert_eq!(answer.status(), 404, "instance {i} served a deleted file");
    }

    // The leader stops; another takes over, caught up: its file ids and revisions continue
    // after the old leader's.
    let (old_leader, old_server) = &instances[leading];
    old_leader.stop().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = loop {
        let leading: Vec<usize> = (0..3)
            .filter(|i| *i != leading && instances[*i].0.is_leader())
            .collect();
        if let [one] = leading[..] {
            break one;
        }
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let created = upload(&instances[next].1, "two.txt").await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        revision_of(&created),
        revision + 1,
        "a gap or a reused revision"
    );
    let record: serde_json::Value = created.json().await.unwrap();
    assert!(record["id"].as_u64().unwrap() > first_id, "{record}");
    assert_eq!(upload(old_server, "three.txt").await.unwrap().status(), 503);
    for (leader, server) in instances {
        leader.stop().await;
        server.stop().await;
    }
}

/// The instance among `addrs` whose `/health/writer` answers 200 (20 s at most; never two).
fn writer_among(addrs: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leading: Vec<usize> = (0..addrs.len())
            .filter(|i| writer_status(&addrs[*i]) == 200)
            .collect();
        assert!(leading.len() < 2, "two writers: {leading:?}");
        if let [one] = leading[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no writer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_follower_promoted_after_the_leaders_sigkill_serves_every_acknowledged_write() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("directory.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlease_ttl_ms = 900\n[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\nschema = {:?}\n",
            scratch.url(),
            scratch.schema()
        ),
    )
    .unwrap();
    let mut running: Vec<(std::process::Child, String)> =
        (0..3).map(|_| serve_directory(&config)).collect();
    let addrs: Vec<String> = running.iter().map(|(_, addr)| addr.clone()).collect();
    let leading = writer_among(&addrs);
    let url = |addr: &str, path: &str| format!("http://{addr}{path}");
    let running_now = &mut running;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime().block_on(async {
            let running = running_now;
            // Acknowledged writes at the leader, one after another.
            let mut acknowledged = Vec::new();
            for i in 0..30 {
                let response = client()
                    .put(url(&addrs[leading], &format!("/teams/core/members/p{i}")))
                    .json(&json!({"role": "member"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                acknowledged.push((i, revision_of(&response)));
            }
            let last = acknowledged.last().unwrap().1;
            // Followers may be behind: SIGKILL the leader at once.
            let (mut child, _) = running.remove(leading);
            child.kill().unwrap();
            child.wait().unwrap();
            let rest: Vec<String> = running.iter().map(|(_, addr)| addr.clone()).collect();
            let next = tokio::task::block_in_place(|| writer_among(&rest));
            for addr in &rest {
                for (i, _) in &acknowledged {
                    let answer: serde_json::Value = client()
                        .get(url(
                            addr,
                            &format!("/teams/core/members/p{i}?min_revision={last}"),
                        ))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert_eq!(answer["member"], true, "p{i} lost on {addr}: {answer}");
                }
            }
            // The new leader continues the sequence: its first event is `last + 1`, and the feed
            // holds every revision once, with no gap.
            let response = client()
                .put(url(&rest[next], "/teams/core/members/after"))
                .json(&json!({"role": "member"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let newest = revision_of(&response);
            let page: serde_json::Value = client()
                .get(url(&rest[next], "/changes?after=0&limit=1000"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let revisions: Vec<u64> = page["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["revision"].as_u64().unwrap())
                .collect();
            assert_eq!(
                revisions,
                (1..=newest).collect::<Vec<u64>>(),
                "a gap or a reuse"
            );
            let first_new = page["changes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["revision"].as_u64() == Some(last + 1))
                .unwrap();
            assert_eq!(first_new["person"], "after", "{first_new}");
        })
    }));
    if let Err(panic) = outcome {
        // Not left running (they would hold the test's output open).
        for (mut child, _) in running {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::panic::resume_unwind(panic);
    }
    for (child, _) in running {
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
    }
}

/// A loopback TCP proxy in front of the test's PostgreSQL that can be stopped (every
/// connection cut, new ones closed at once) and started again: the database going away and
/// coming back, for these instances only (the server itself is shared by parallel tests).
struct DatabaseSwitch {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    live: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl DatabaseSwitch {
    fn start(url: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let value = |key: &str| {
            url.split_whitespace()
                .find_map(|pair| pair.strip_prefix(key))
                .map(str::to_string)
        };
        let upstream = (
            value("host=").unwrap_or_else(|| "127.0.0.1".to_string()),
            value("port=").map_or(5432, |p| p.parse().unwrap()),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let live = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accepting, tracked) = (Arc::clone(&up), Arc::clone(&live));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect((upstream.0.as_str(), upstream.1))
                else {
                    continue;
                };
                let mut sockets = tracked.lock().unwrap();
                sockets.push(client.try_clone().unwrap());
                sockets.push(server.try_clone().unwrap());
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        DatabaseSwitch { port, up, live }
    }

    /// The test server's connection string through the proxy.
    fn url(&self, url: &str) -> String {
        url.split_whitespace()
            .filter(|pair| !pair.starts_with("host=") && !pair.starts_with("port="))
            .map(str::to_string)
            .chain(["host=127.0.0.1".to_string(), format!("port={}", self.port)])
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn stop(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for socket in self.live.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    fn resume(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn with_the_database_away_writes_are_refused_reads_go_on_and_health_says_stale() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let keep = Keep::default();
    let switch = DatabaseSwitch::start(&scratch.url());
    runtime().block_on(database_away_on(&scratch, &keep, &switch));
}

async fn database_away_on(scratch: &PgScratch, keep: &Keep, switch: &DatabaseSwitch) {
    use reqwest::Method;
    let (instances, _) = directories(scratch, &switch.url(&scratch.url()), keep, 3).await;
    let written = at_leader(&instances, Method::PUT, "/teams/core-dev/members/alice").await;
    assert_eq!(written.status(), 200);
    let revision = revision_of(&written);
    for (_, server) in &instances {
        let (status, _) = get_json(
            server,
            &format!("/teams/core-dev/members/alice?min_revision={revision}"),
        )
        .await;
        assert_eq!(status, 200);
    }

    tokio::task::block_in_place(|| switch.stop());
    // Writes: 503 with Retry-After (the database is out of reach, or the leader stepped
    // aside when it could not renew its lease), on every instance.
    for (_, server) in &instances {
        let refused = server
            .send(Method::PUT, "/teams/core-dev/members/ghost")
            .await;
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().contains_key("retry-after"));
        let code = error_code(refused).await;
        assert!(
            code == "database_unavailable" || code == "not_leader",
            "{code}"
        );
    }
    // Reads go on from memory; /health says stale once max_staleness (1 s) has passed.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, (_, server)) in instances.iter().enumerate() {
        loop {
            let (status, health) = get_json(server, "/health").await;
            if health["stale"] == true {
                assert_eq!(
                    (status, &health["status"]),
                    (200, &json!("stale")),
                    "{health}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {i} never stale: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, answer) = get_json(server, "/teams/core-dev/members/alice").await;
        assert_eq!((status, &answer["member"]), (200, &json!(true)), "{answer}");
    }

    // The database back: a leader again, writes accepted, the refused one recorded nowhere.
    switch.resume();
    let written = at_leader(&instances, Method::PUT, "/teams/core-dev/members/bob").await;
    assert_eq!(written.status(), 200);
    let revision = revision_of(&written);
    for (i, (_, server)) in instances.iter().enumerate() {
        let (status, answer) = get_json(
            server,
            &format!("/teams/core-dev/members/ghost?min_revision={revision}"),
        )
        .await;
        assert!(
            status == 404 || answer["member"] == false,
            "instance {i}: {status} {answer}"
        );
        let (_, health) = get_json(server, "/health").await;
        assert_eq!(health["stale"], false, "{health}");
    }
    for (leader, server) in instances {
        leader.stop().await;
        server.stop().await;
    }
}

/// GC and the orphan sweep run on the writer only: `librarian gc` (`collect_as_writer`) is
/// refused while a server holds the lease, and runs (as the writer) once it is free.
#[test]
fn the_offline_gc_runs_only_as_the_writer() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let settings = scratch.settings();
        let path = dir.path().to_path_buf();
        let store: blobstore::Store = tokio::task::spawn_blocking(move || {
            let engine = engine::EngineConfig::postgres(settings)
                .open(blobstore::KEYSPACES)
                .unwrap();
            blobstore::StoreBuilder::with_engine(engine, &path)
                .token_secrets([3; 32], None)
                .open()
                .unwrap()
        })
        .await
        .unwrap();
        keep.engine(store.engine());
        keep.store(&store);
        let server = Leader::elect(store.engine().clone(), "librarian", Duration::from_secs(3));
        server.start();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.is_leader() {
            assert!(Instant::now() < deadline, "not elected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gc_store = store.clone();
        let refused =
            tokio::task::spawn_blocking(move || librarian::collect_as_writer(&gc_store, 100))
                .await
                .unwrap();
        assert!(
            matches!(refused, Err(librarian::OfflineGcError::NotWriter)),
            "{refused:?}"
        );
        assert!(server.is_leader(), "the GC took the lease from the server");
        server.stop().await;
        let gc_store = store.clone();
        let ran = tokio::task::spawn_blocking(move || librarian::collect_as_writer(&gc_store, 100))
            .await
            .unwrap();
        assert!(ran.is_ok(), "{ran:?}");
        // It gave the lease back: a server is elected again at once.
        let again = Leader::elect(store.engine().clone(), "librarian", Duration::from_secs(3));
        again.round().await;
        assert!(again.is_leader());
        again.stop().await;
    });
}
