// Test-only: the PostgreSQL and election scenarios share one set of process and database
// helpers; the followers' scenarios are in `followers.rs`.
//! Both servers on PostgreSQL (`store.backend = "postgres"`), the settings they refuse, and
//! the election of one writer among several instances (`common::leader`): `/health/writer`,
//! `503 not_leader` with `Retry-After` on the others, a graceful stop handing over at once, in
//! process and with three `directory serve` processes (SIGTERM twice, then SIGKILL).
//! The PostgreSQL tests run against `LPSTORE_TEST_POSTGRES` (`scripts/with-postgres.sh`), each
//! in a schema of its own, and skip themselves (saying so) without it.

mod followers;
mod upgrade;

pub(crate) use followers::{at_leader, elected, revision_of};

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
    pub(crate) async fn start(app: impl Into<serve::App>) -> Self {
        let app: serve::App = app.into();
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
    let server = Running::start(directory::app(state)).await;
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
    let server = Running::start(directory::app(state)).await;
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
        instances.push((leader, Running::start(directory::app(state)).await));
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

/// Three `directory` processes on one PostgreSQL schema (a 900 ms writer lease), and the
/// configuration file they read (written into `dir`), for starting more.
fn three_directory_processes(
    scratch: &PgScratch,
    dir: &std::path::Path,
) -> (std::path::PathBuf, Vec<(std::process::Child, String)>) {
    let config = dir.join("directory.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlease_ttl_ms = 900\n[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\nschema = {:?}\n",
            scratch.url(),
            scratch.schema()
        ),
    )
    .unwrap();
    let running = (0..3).map(|_| serve_directory(&config)).collect();
    (config, running)
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
fn directory_processes_hand_the_writer_over_on_sigterm_and_sigkill() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let dir = tempfile::tempdir().unwrap();
    let (config, mut running) = three_directory_processes(&scratch, dir.path());
    let leader_of = |running: &[(std::process::Child, String)]| {
        let addrs: Vec<String> = running.iter().map(|(_, addr)| addr.clone()).collect();
        writer_among(&addrs)
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
