//! Followers: three instances of each server on one database (`common::follow`), a follower
//! promoted after the leader's SIGKILL, the database going away and coming back, and the
//! offline GC running only as the writer.

use super::*;

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
        instances.push((leader, Running::start(directory::app(state)).await));
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

#[test]
fn a_follower_promoted_after_the_leaders_sigkill_serves_every_acknowledged_write() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let dir = tempfile::tempdir().unwrap();
    let (_config, mut running) = three_directory_processes(&scratch, dir.path());
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
