//! Crash soaks: the real `librarian` and `directory` binaries under concurrent load, killed
//! with SIGKILL at random moments and restarted over the same data directory (RocksDB).
//!
//! Librarian: every acknowledged upload (a 201) downloads after each restart and matches its
//! BLAKE3; every bucket's statistics equal what its file listing adds up to; at the end the
//! store opened in-process finds no drift (`check`) and no corrupt or missing blob (`verify`).
//!
//! Directory: each writer owns a set of membership edges (teams are layered, so no write can
//! close a cycle) and adds or removes them; after each restart every edge whose last request
//! was acknowledged is as that request left it (an edge whose last request was cut by the kill
//! may be either way), and every team's transitive members equal a BFS over the direct edges
//! the server reports.
//!
//! It also pushes commits (one or two parents among the acknowledged ones, so merges too) to
//! one repository and moves four branches to them; after each restart every acknowledged
//! commit is there, and sampled ancestry answers and the merged-status of every pair of
//! branches whose last move was acknowledged agree with a BFS over the acknowledged pushes.
//!
//! `SOAK_KILLS` sets the number of kills of each soak (default 5, CI); the documented long run
//! uses 50 or more (docs/RELIABILITY.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};

fn kills() -> usize {
    std::env::var("SOAK_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process; killed with SIGKILL when dropped.
pub(crate) struct Server {
    child: Child,
    base: String,
}

impl Server {
    pub(crate) async fn start(binary: &str, data: &Path) -> Server {
        let port = free_port();
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        // Readiness: the process binds after opening the store; wait for its health check.
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{}/health", server.base)).send().await {
                assert_eq!(r.status(), 200, "health after a restart");
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{binary} did not become healthy");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no shutdown, no flush.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic content of `len` bytes for `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = vec![0; len];
    rng.fill(&mut out[..]);
    out
}

#[derive(Clone, Debug)]
struct Acked {
    url: String,
    blake3: String,
    bucket: String,
    /// The revision its answer named (`X-Revision`).
    revision: u64,
}

const BUCKETS: [&str; 3] = ["soak-a", "soak-b", "soak-c"];

/// Uploads and downloads until the server dies; records every acknowledged upload.
async fn librarian_load(base: String, seed: u64, acked: Arc<Mutex<Vec<Acked>>>) -> u64 {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut uploads = 0;
    loop {
        let bucket = BUCKETS[rng.gen_range(0..BUCKETS.len())];
        // Inline, file-backed and larger blobs; a few repeat content (dedup).
        let len = [0, 100, 20_000, 300_000][rng.gen_range(0..4)];
        let seeds = if rng.gen_bool(0.2) { 8 } else { u64::MAX };
        let body = content(rng.gen_range(0..seeds), len);
        let response = client
            .post(format!(
                "{base}/buckets/{bucket}/files?filename=f{uploads}.bin"
            ))
            .body(body.clone())
            .send()
            .await;
        let Ok(response) = response else {
            return uploads;
        };
        if response.status() != 201 {
            assert!(
                response.status().is_server_error(),
                "upload: {}",
                response.status()
            );
            return uploads;
        }
        let revision = response.headers()["x-revision"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let Ok(json) = response.json::<serde_json::Value>().await else {
            return uploads;
        };
        uploads += 1;
        let record = Acked {
            url: json["url"].as_str().unwrap().to_string(),
            blake3: json["blake3"].as_str().unwrap().to_string(),
            bucket: bucket.to_string(),
            revision,
        };
        assert_eq!(json["revision"], revision);
        assert_eq!(record.blake3, blake3::hash(&body).to_hex().to_string());
        acked.lock().unwrap().push(record);
        // A download of something acknowledged earlier.
        let earlier = {
            let all = acked.lock().unwrap();
            all[rng.gen_range(0..all.len())].clone()
        };
        match client.get(format!("{base}{}", earlier.url)).send().await {
            Ok(r) if r.status() == 200 => {
                if let Ok(bytes) = r.bytes().await {
                    assert_eq!(blake3::hash(&bytes).to_hex().to_string(), earlier.blake3);
                }
            }
            Ok(r) => assert!(
                r.status().is_server_error(),
                "{}: {}",
                earlier.url,
                r.status()
            ),
            Err(_) => return uploads,
        }
    }
}

async fn verify_librarian(server: &Server, acked: &[Acked]) {
    let client = reqwest::Client::new();
    let mut listed = HashSet::new();
    for file in acked {
        let response = client.get(server.url(&file.url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{} after a kill", file.url);
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            blake3::hash(&bytes).to_hex().to_string(),
            file.blake3,
            "{}",
            file.url
        );
    }
    for bucket in BUCKETS {
        let stats: serde_json::Value = client
            .get(server.url(&format!("/buckets/{bucket}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (mut files, mut logical) = (0, 0);
        let mut distinct = HashMap::new();
        let mut after = String::new();
        loop {
            let page: serde_json::Value = client
                .get(server.url(&format!("/buckets/{bucket}/files?limit=500{after}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for f in page["files"].as_array().unwrap() {
                listed.insert(f["id"].as_u64().unwrap());
                files += 1;
                let size = f["size"].as_u64().unwrap();
                logical += size;
                distinct.insert(f["blake3"].as_str().unwrap().to_string(), size);
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        assert_eq!(stats["files"], files, "{bucket}: {stats}");
        assert_eq!(stats["logical_bytes"], logical, "{bucket}: {stats}");
        assert_eq!(
            stats["unique_bytes"],
            distinct.values().sum::<u64>(),
            "{bucket}: {stats}"
        );
        let acked_here = acked.iter().filter(|a| a.bucket == bucket).count();
        assert!(
            files >= acked_here as u64,
            "{bucket}: {files} files, {acked_here} acknowledged"
        );
    }
    verify_librarian_feed(server, acked, &listed).await;
}

/// The feed after a kill: revisions 1, 2, ... with no gap; every acknowledged upload has its
/// `file.created` at the revision it was answered; and every event's file is in the store
/// (the load only uploads: no event without its change, no change without its event).
async fn verify_librarian_feed(server: &Server, acked: &[Acked], listed: &HashSet<u64>) {
    let client = reqwest::Client::new();
    let mut events = HashMap::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = client
            .get(server.url(&format!("/changes?after={after}&limit=1000")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for change in page["changes"].as_array().unwrap() {
            let revision = change["revision"].as_u64().unwrap();
            assert_eq!(revision, after + 1, "a gap in the feed");
            assert_eq!(change["kind"], "file.created");
            events.insert(revision, change["file"].as_u64().unwrap());
            after = revision;
        }
        if page["next"] == page["head"] {
            break;
        }
    }
    for file in acked {
        let id: u64 = file.url.split('/').nth(1).unwrap().parse().unwrap();
        assert_eq!(events.get(&file.revision), Some(&id), "{file:?}");
    }
    let in_feed: HashSet<u64> = events.values().copied().collect();
    assert_eq!(
        &in_feed, listed,
        "the files of the feed and of the store differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librarian_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("librarian");
    let binary = env!("CARGO_BIN_EXE_librarian");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    );
    let rounds = kills();
    for round in 0..rounds {
        let mut server = Server::start(binary, &data).await;
        let so_far = acked.lock().unwrap().clone();
        verify_librarian(&server, &so_far).await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                tokio::spawn(librarian_load(
                    server.base.clone(),
                    (round * 100 + w) as u64,
                    Arc::clone(&acked),
                ))
            })
            .collect();
        // Killed at a random moment once the round has load: on a loaded machine the first
        // uploads of a fresh server can take longer than the whole random pause.
        let before = so_far.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..800))).await;
        server.kill();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let server = Server::start(binary, &data).await;
    let acked = acked.lock().unwrap().clone();
    verify_librarian(&server, &acked).await;
    drop(server);
    eprintln!(
        "librarian soak: {rounds} kills survived, {} acknowledged uploads verified",
        acked.len()
    );
    assert!(acked.len() >= rounds, "too little load: {}", acked.len());

    // The store as the next process finds it: no drift, no corrupt or missing blob. Opened
    // off the async workers, as the configuration's `open_store` asks.
    let mut config = servers::librarian::LibrarianConfig::load(None).unwrap();
    config.store.data_dir = data.clone();
    let files = tokio::task::spawn_blocking(move || {
        let store = config.open_store().unwrap().store;
        let report = store.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let mut after = None;
        loop {
            let verified = store.verify(after, 1000).unwrap();
            assert!(verified.problems.is_empty(), "{:?}", verified.problems);
            match verified.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        report.files
    })
    .await
    .unwrap();
    assert!(files >= acked.len() as u64);
}

const TEAMS: usize = 6;
const PERSONS: usize = 8;

fn team(i: usize) -> String {
    format!("team{i}")
}

fn person(i: usize) -> String {
    format!("person{i}")
}

/// The state of one membership edge (member, team) as the writer last left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EdgeState {
    /// The last request was acknowledged: the edge is present or absent.
    Known(bool),
    /// The last request was cut by the kill: either.
    Unknown,
}

/// The edges writer `w` owns: those whose (member, team) hash to it. Team i may hold persons
/// and teams j > i only, so no write closes a cycle.
fn owned_edges(w: usize, writers: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in 0..TEAMS {
        for p in 0..PERSONS {
            out.push((person(p), team(t)));
        }
        for u in t + 1..TEAMS {
            out.push((team(u), team(t)));
        }
    }
    out.into_iter()
        .enumerate()
        .filter(|(i, _)| i % writers == w)
        .map(|(_, e)| e)
        .collect()
}

async fn directory_load(
    base: String,
    seed: u64,
    edges: Vec<(String, String)>,
    model: Arc<Mutex<BTreeMap<(String, String), EdgeState>>>,
) -> u64 {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut writes = 0;
    loop {
        let (member, team) = edges[rng.gen_range(0..edges.len())].clone();
        let add = rng.gen_bool(0.6);
        let url = format!("{base}/teams/{team}/members/{member}");
        let key = (member.clone(), team.clone());
        model
            .lock()
            .unwrap()
            .insert(key.clone(), EdgeState::Unknown);
        let request = if add {
            let role = if rng.gen_bool(0.5) { "member" } else { "admin" };
            client
                .put(&url)
                .json(&serde_json::json!({"role": role, "expires": null}))
        } else {
            client.delete(&url)
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                model.lock().unwrap().insert(key, EdgeState::Known(add));
                writes += 1;
            }
            // Deleting an edge of a node that does not exist yet.
            Ok(r) if !add && r.status() == 404 => {
                model.lock().unwrap().insert(key, EdgeState::Known(false));
                writes += 1;
            }
            Ok(r) => {
                assert!(r.status().is_server_error(), "{url}: {}", r.status());
                return writes;
            }
            Err(_) => return writes,
        }
    }
}

async fn members(
    client: &reqwest::Client,
    server: &Server,
    team: &str,
    transitive: bool,
) -> Option<BTreeSet<String>> {
    let response = client
        .get(server.url(&format!(
            "/teams/{team}/members?transitive={transitive}&type=all"
        )))
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.unwrap();
    Some(
        json["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect(),
    )
}

async fn verify_directory(server: &Server, model: &BTreeMap<(String, String), EdgeState>) -> usize {
    let client = reqwest::Client::new();
    let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in 0..TEAMS {
        if let Some(found) = members(&client, server, &team(t), false).await {
            direct.insert(team(t), found);
        }
    }
    let mut checked = 0;
    for ((member, team), state) in model {
        let present = direct.get(team).is_some_and(|m| m.contains(member));
        if let EdgeState::Known(expected) = state {
            assert_eq!(present, *expected, "{member} in {team} after a kill");
            checked += 1;
        }
    }
    verify_feed(&client, server, &direct).await;
    // Transitive members: a BFS over the direct edges the server reports.
    for t in direct.keys() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![t.clone()];
        while let Some(x) = todo.pop() {
            for m in direct.get(&x).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        let found = members(&client, server, t, true).await.unwrap();
        assert_eq!(found, seen, "transitive members of {t}");
    }
    checked
}

/// The change feed after a kill: revisions 1, 2, 3, ... without a gap, and replaying the
/// teams' membership events gives exactly the direct memberships the server holds (no change
/// without its event, no event without its change).
async fn verify_feed(
    client: &reqwest::Client,
    server: &Server,
    direct: &BTreeMap<String, BTreeSet<String>>,
) {
    let mut replayed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = client
            .get(server.url(&format!("/changes?after={after}&limit=1000")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in page["changes"].as_array().unwrap() {
            let revision = event["revision"].as_u64().unwrap();
            assert_eq!(revision, after + 1, "a gap in the feed before {event}");
            after = revision;
            if event["namespace"] != "teams" {
                continue;
            }
            let edge = || {
                (
                    event["member"].as_str().unwrap().to_owned(),
                    event["team"].as_str().unwrap().to_owned(),
                )
            };
            match event["kind"].as_str().unwrap() {
                "membership.added" | "membership.changed" => {
                    replayed.insert(edge());
                }
                "membership.removed" => {
                    assert!(
                        replayed.remove(&edge()),
                        "removal of an absent edge: {event}"
                    );
                }
                _ => {}
            }
        }
        if page["next"].as_u64().unwrap() == page["head"].as_u64().unwrap() {
            break;
        }
        after = page["next"].as_u64().unwrap();
    }
    let held: BTreeSet<(String, String)> = direct
        .iter()
        .flat_map(|(team, members)| members.iter().map(|m| (m.clone(), team.clone())))
        .collect();
    assert_eq!(
        replayed, held,
        "the feed replayed differs from the memberships"
    );
}

/// The commits and branches of the soak's repository as acknowledged pushes left them.
#[derive(Debug, Default, Clone)]
struct Pushes {
    /// Acknowledged commits and their parents, in push order.
    commits: Vec<(String, Vec<String>)>,
    /// Branch tips: known when the last move was acknowledged, `None` when it was cut.
    branches: BTreeMap<String, Option<String>>,
}

impl Pushes {
    fn is_ancestor(&self, a: &str, b: &str) -> bool {
        let parents: HashMap<&str, &Vec<String>> =
            self.commits.iter().map(|(c, p)| (c.as_str(), p)).collect();
        let mut seen = BTreeSet::from([b]);
        let mut todo = vec![b];
        while let Some(x) = todo.pop() {
            for p in parents.get(x).into_iter().flat_map(|p| p.iter()) {
                if seen.insert(p.as_str()) {
                    todo.push(p.as_str());
                }
            }
        }
        seen.contains(a)
    }
}

/// Pushes commits (one or two parents among the acknowledged ones) and moves branches to
/// them until the server dies.
async fn push_load(base: String, seed: u64, model: Arc<Mutex<Pushes>>) -> u64 {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pushes = 0;
    loop {
        let id: String = (0..40)
            .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
            .collect();
        let parents: Vec<String> = {
            let m = model.lock().unwrap();
            let n = if m.commits.is_empty() {
                0
            } else {
                rng.gen_range(1..=2)
            };
            let mut parents: Vec<String> = (0..n)
                .map(|_| m.commits[rng.gen_range(0..m.commits.len())].0.clone())
                .collect();
            parents.dedup();
            parents
        };
        let line = std::iter::once(id.clone())
            .chain(parents.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        match client
            .post(format!("{base}/repos/soak/commits"))
            .body(format!("{line}\n"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => model.lock().unwrap().commits.push((id.clone(), parents)),
            Ok(r) => {
                assert!(r.status().is_server_error(), "push: {}", r.status());
                return pushes;
            }
            Err(_) => return pushes,
        }
        pushes += 1;
        let branch = format!("b{}", rng.gen_range(0..4));
        model.lock().unwrap().branches.insert(branch.clone(), None);
        match client
            .put(format!("{base}/repos/soak/branches/{branch}"))
            .json(&serde_json::json!({ "tip": id }))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                model.lock().unwrap().branches.insert(branch, Some(id));
            }
            Ok(r) => {
                assert!(r.status().is_server_error(), "branch: {}", r.status());
                return pushes;
            }
            Err(_) => return pushes,
        }
    }
}

/// Every acknowledged commit is there; ancestry of sampled pairs and the merged-status of
/// every pair of branches whose last move was acknowledged agree with a BFS over the pushes.
async fn verify_pushes(server: &Server, model: &Pushes, rng: &mut impl Rng) -> usize {
    let client = reqwest::Client::new();
    let ancestry = |a: &str, b: &str| {
        client
            .get(server.url(&format!("/repos/soak/ancestry?ancestor={a}&descendant={b}")))
            .send()
    };
    let mut checked = 0;
    for (commit, _) in &model.commits {
        let r = ancestry(commit, commit).await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged commit {commit} after a kill");
    }
    for _ in 0..model.commits.len().min(200) {
        let a = &model.commits[rng.gen_range(0..model.commits.len())].0;
        let b = &model.commits[rng.gen_range(0..model.commits.len())].0;
        let json: serde_json::Value = ancestry(a, b).await.unwrap().json().await.unwrap();
        assert_eq!(
            json["ancestor"],
            model.is_ancestor(a, b),
            "{a} ancestor of {b}"
        );
        checked += 1;
    }
    let known: Vec<(&String, &String)> = model
        .branches
        .iter()
        .filter_map(|(b, tip)| tip.as_ref().map(|t| (b, t)))
        .collect();
    for (x, tip_x) in &known {
        for (y, tip_y) in &known {
            let json: serde_json::Value = client
                .get(server.url(&format!("/repos/soak/branches/{x}/merged-into/{y}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                json["merged"],
                model.is_ancestor(tip_x, tip_y),
                "{x} merged into {y}: {json}"
            );
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("directory");
    let binary = env!("CARGO_BIN_EXE_directory");
    let model = Arc::new(Mutex::new(BTreeMap::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let rounds = kills();
    let writers = 6;
    let mut writes = 0;
    let pushes = Arc::new(Mutex::new(Pushes::default()));
    let mut pushed = 0;
    {
        // Every node exists before the load, so that a write never creates one of the
        // wrong kind.
        let server = Server::start(binary, &data).await;
        let client = reqwest::Client::new();
        let names = (0..TEAMS)
            .map(|t| format!("/teams/{}", team(t)))
            .chain((0..PERSONS).map(|p| format!("/persons/{}", person(p))));
        for path in names {
            let response = client.put(server.url(&path)).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
        }
    }
    for round in 0..rounds {
        let mut server = Server::start(binary, &data).await;
        let (edges, pushed_so_far) = (
            model.lock().unwrap().clone(),
            pushes.lock().unwrap().clone(),
        );
        verify_directory(&server, &edges).await;
        verify_pushes(&server, &pushed_so_far, &mut rng).await;
        let pusher = tokio::spawn(push_load(
            server.base.clone(),
            round as u64,
            Arc::clone(&pushes),
        ));
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                tokio::spawn(directory_load(
                    server.base.clone(),
                    (round * 100 + w) as u64,
                    owned_edges(w, writers),
                    Arc::clone(&model),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..800))).await;
        server.kill();
        for task in tasks {
            writes += task.await.unwrap();
        }
        pushed += pusher.await.unwrap();
    }
    let server = Server::start(binary, &data).await;
    let (edges, pushed_so_far) = (
        model.lock().unwrap().clone(),
        pushes.lock().unwrap().clone(),
    );
    let checked = verify_directory(&server, &edges).await;
    let answers = verify_pushes(&server, &pushed_so_far, &mut rng).await;
    eprintln!(
        "directory soak: {rounds} kills survived, {writes} acknowledged membership writes \
         ({checked} edges checked), {pushed} acknowledged pushes ({answers} answers checked)"
    );
    assert!(writes >= rounds as u64, "too little load: {writes}");
    assert!(checked > 0);
    assert!(pushed > 0 && answers > 0);
}
