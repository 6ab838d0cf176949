//! Backup and restore of running servers on RocksDB: a backup taken under write load holds
//! exactly the writes acknowledged up to its revision, restores into a fresh instance that
//! answers like the original did, and damaged backups or occupied destinations are refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blobstore::{Access, BucketName, FileId};
use engine::backup::BackupError;
use engine::{Direction, Engine, ScanRange};
use serde_json::{json, Value};
use servers::common::access::hash_password;
use servers::common::{serve, Credential, ServerConfig};
use servers::directory::{self, config::GraphConfig, Directory};
use servers::librarian::backup::LibrarianBackupError;
use servers::librarian::{self, config::StoreConfig, Librarian};
use tokio::sync::oneshot;

use crate::support::{client, content, error_code, PASSWORD, USER};

/// A router served on 127.0.0.1:0 until stopped.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn serve(app: impl Into<servers::common::serve::App>) -> Running {
        let app: servers::common::serve::App = app.into();
        let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let limits = servers::common::Limits::default();
        let task = tokio::spawn(serve::serve(listener, app, limits, async {
            let _ = rx.await;
        }));
        Running {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    async fn backup(&self, dir: &Path) -> reqwest::Response {
        client()
            .post(self.url("/admin/backup"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&json!({ "dir": dir }))
            .send()
            .await
            .unwrap()
    }

    /// A backup into `dir` that succeeds: its summary, from the last line of the streamed
    /// answer.
    async fn backup_done(&self, dir: &Path) -> Value {
        let response = self.backup(dir).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let body = response.text().await.unwrap();
        let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
        assert_eq!(last["status"], "done", "{body}");
        last["backup"].clone()
    }

    /// The status and body of a GET.
    async fn get(&self, path: &str) -> (u16, String) {
        let response = client()
            .get(self.url(path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn put(&self, path: &str, body: Value) -> reqwest::Response {
        let mut request = client()
            .put(self.url(path))
            .basic_auth(USER, Some(PASSWORD));
        if !body.is_null() {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }
}

fn server_config() -> ServerConfig {
    ServerConfig {
        credentials: vec![Credential {
            user: USER.into(),
            hash: hash_password(PASSWORD),
        }],
        ..ServerConfig::default()
    }
}

fn librarian_store_config(data_dir: PathBuf) -> StoreConfig {
    StoreConfig {
        data_dir,
        ..StoreConfig::default()
    }
}

fn open_librarian(store: &StoreConfig) -> blobstore::Store {
    let config = librarian::LibrarianConfig {
        store: store.clone(),
        ..librarian::LibrarianConfig::default()
    };
    config.open_store().unwrap().store
}

async fn start_librarian(store: blobstore::Store, config: &StoreConfig) -> Running {
    let state = Librarian::new(store, &server_config())
        .unwrap()
        .with_store_config(config.clone());
    Running::serve(librarian::router(state)).await
}

/// Every key and value of every keyspace of `engine`.
fn everything(engine: &dyn Engine, keyspaces: &[&str]) -> BTreeMap<String, Vec<engine::KeyValue>> {
    keyspaces
        .iter()
        .map(|name| {
            let keyspace = engine.keyspace(name).unwrap();
            let all = engine
                .scan(keyspace, ScanRange::all(), Direction::Forward)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            (name.to_string(), all)
        })
        .collect()
}

/// An acknowledged upload: its id, bucket, bytes and revision.
#[derive(Clone, Debug)]
struct Acked {
    id: u64,
    bucket: String,
    bytes: Vec<u8>,
    revision: u64,
}

async fn upload(server: SocketAddr, bucket: &str, name: &str, bytes: Vec<u8>) -> Acked {
    let response = client()
        .post(format!(
            "http://{server}/buckets/{bucket}/files?filename={name}"
        ))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let record: Value = response.json().await.unwrap();
    Acked {
        id: record["id"].as_u64().unwrap(),
        bucket: bucket.to_string(),
        bytes,
        revision: record["revision"].as_u64().unwrap(),
    }
}

/// Sizes on both sides of the inline threshold (16 KiB): records with inline content and
/// records with blob files.
fn size_of(i: usize) -> usize {
    if i % 2 == 0 {
        300 + i
    } else {
        20_000 + 37 * i
    }
}

fn read_all(store: &blobstore::Store, id: u64) -> Vec<u8> {
    let mut reader = store.read(FileId(id), Access::Trusted, None).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn librarian_backup_under_load_restores_exactly_the_acknowledged_writes() {
    let root = tempfile::tempdir().unwrap();
    let config = librarian_store_config(root.path().join("live"));
    let store = open_librarian(&config);
    let server = start_librarian(store.clone(), &config).await;

    // Before the load: files in two buckets, a quota, deleted files and deleted content.
    let mut seeded = Vec::new();
    for i in 0..12 {
        let bucket = if i % 3 == 0 { "logs" } else { "ppa" };
        seeded.push(
            upload(
                server.addr,
                bucket,
                &format!("seed-{i}"),
                content(size_of(i), i as u64),
            )
            .await,
        );
    }
    let quota = client()
        .put(server.url("/buckets/ppa"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"quota_bytes": 100_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(quota.status(), 200);
    for (path, method) in [
        (format!("/files/{}", seeded[1].id), "file"),
        (format!("/files/{}/content", seeded[2].id), "content"),
    ] {
        let response = client()
            .delete(server.url(&path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "delete {method}");
    }

    // Four writers upload until told to stop; the backup is taken in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let seed = 1000 * (w + 1) + i;
                    let bucket = if i % 2 == 0 { "load" } else { "ppa" };
                    acked.push(
                        upload(
                            addr,
                            bucket,
                            &format!("w{w}-{i}"),
                            content(size_of(i), seed as u64),
                        )
                        .await,
                    );
                    i += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let backup_dir = root.path().join("backup");
    let answer = server.backup_done(&backup_dir).await;
    let revision = answer["revision"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut loaded = Vec::new();
    for writer in writers {
        loaded.extend(writer.await.unwrap());
    }
    let after = loaded.iter().filter(|a| a.revision > revision).count();
    let before = loaded.iter().filter(|a| a.revision <= revision).count();
    assert!(
        before > 0 && after > 0,
        "{before} uploads before the backup's revision, {after} after"
    );

    // Restore into a fresh data directory and open it.
    let restored_config = librarian_store_config(root.path().join("restored"));
    let manifest = librarian::backup::restore(&backup_dir, &restored_config).unwrap();
    assert_eq!(manifest.revision, revision);
    let restored = open_librarian(&restored_config);
    assert_eq!(restored.change_log().head(), revision);

    // Every acknowledged upload up to the revision is there, record and bytes; none after.
    let deleted = [seeded[1].id, seeded[2].id];
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for acked in seeded.iter().chain(&loaded) {
        let found = restored.file(FileId(acked.id));
        if acked.revision > revision {
            assert!(
                matches!(found, Err(blobstore::Error::NotFound { .. })),
                "upload {} at revision {} after the backup's {revision}: {found:?}",
                acked.id,
                acked.revision
            );
            continue;
        }
        if deleted.contains(&acked.id) {
            assert_eq!(
                format!("{found:?}"),
                format!("{:?}", store.file(FileId(acked.id)))
            );
            if acked.id == seeded[2].id {
                // Its content is gone; its record stays, counted without bytes.
                expected.entry(acked.bucket.clone()).or_default().0 += 1;
            }
            continue;
        }
        assert_eq!(found.unwrap(), store.file(FileId(acked.id)).unwrap());
        assert_eq!(
            read_all(&restored, acked.id),
            acked.bytes,
            "file {}",
            acked.id
        );
        let entry = expected.entry(acked.bucket.clone()).or_default();
        entry.0 += 1;
        entry.1 += acked.bytes.len() as u64;
    }
    for (bucket, (files, bytes)) in &expected {
        let stats = restored
            .bucket_stats(&BucketName::new(bucket.clone()).unwrap())
            .unwrap();
        assert_eq!(
            (stats.files, stats.logical_bytes),
            (*files, *bytes),
            "bucket {bucket}"
        );
    }
    let ppa = BucketName::new("ppa".to_string()).unwrap();
    assert_eq!(restored.quota(&ppa).unwrap(), Some(100_000_000));
    assert_eq!(
        restored.summary().unwrap().files,
        expected.values().map(|(files, _)| files).sum::<u64>()
    );
    // The change feed: the live store's events up to the revision, exactly.
    let live_events: Vec<_> = store
        .changes(0, 1_000_000)
        .unwrap()
        .into_iter()
        .filter(|change| change.revision <= revision)
        .collect();
    assert_eq!(restored.changes(0, 1_000_000).unwrap(), live_events);
    assert_eq!(live_events.last().unwrap().revision, revision);
    let scrub = restored.verify(None, 1_000_000).unwrap();
    assert!(scrub.problems.is_empty(), "{:?}", scrub.problems);
    drop(restored);

    // Quiet now: a second backup holds every key of every keyspace, and restores so.
    let quiet_dir = root.path().join("quiet");
    server.backup_done(&quiet_dir).await;
    let quiet_config = librarian_store_config(root.path().join("quiet-restored"));
    librarian::backup::restore(&quiet_dir, &quiet_config).unwrap();
    let quiet = open_librarian(&quiet_config);
    assert_eq!(
        everything(quiet.engine().as_ref(), blobstore::KEYSPACES),
        everything(store.engine().as_ref(), blobstore::KEYSPACES)
    );
    for acked in &loaded {
        assert_eq!(read_all(&quiet, acked.id), acked.bytes);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librarian_backup_refuses_occupied_destinations_and_damaged_backups() {
    let root = tempfile::tempdir().unwrap();
    let config = librarian_store_config(root.path().join("live"));
    let store = open_librarian(&config);
    let server = start_librarian(store.clone(), &config).await;
    let big = upload(server.addr, "b", "big", content(50_000, 7)).await;
    upload(server.addr, "b", "small", content(100, 8)).await;
    // A resumable upload half received: its acknowledged bytes go into the backup.
    let resumable = content(60_000, 9);
    let created = store
        .create_upload(
            blobstore::UploadRequest::new(BucketName::new("b".to_string()).unwrap(), "resumed"),
            resumable.len() as u64,
            String::new(),
            None,
            "t",
        )
        .unwrap();
    let upload_id = created.upload.id;
    store
        .append_upload(upload_id, 0, &mut &resumable[..25_000], None)
        .unwrap();

    // A destination that holds a file is refused, and the file left alone.
    let occupied = root.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep"), b"mine").unwrap();
    let response = server.backup(&occupied).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "backup_dir_not_empty");
    assert_eq!(std::fs::read(occupied.join("keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);
    // A relative path names nothing on the server's machine.
    let response = client()
        .post(server.url("/admin/backup"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"dir": "relative/backup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Without credentials: refused like any write.
    let response = client()
        .post(server.url("/admin/backup"))
        .json(&json!({"dir": root.path().join("anonymous")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!root.path().join("anonymous").exists());

    // The command line's client: refused the same way, then a backup it reads to the end.
    let base = format!("http://{}", server.addr);
    let refused =
        servers::common::backup::request_backup(&base, &occupied, Some((USER, PASSWORD))).await;
    assert!(
        matches!(
            refused,
            Err(servers::common::backup::BackupClientError::Refused { status: 409, .. })
        ),
        "{refused:?}"
    );
    let backup = root.path().join("backup");
    let summary = servers::common::backup::request_backup(&base, &backup, Some((USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(summary["service"], "librarian");
    assert_eq!(summary["counts"]["files"], 2);
    assert_eq!(summary["counts"]["partial_uploads"], 1);
    server.stop().await;

    // A restore into a data directory that holds something is refused.
    let busy = librarian_store_config(root.path().join("busy"));
    std::fs::create_dir(&busy.data_dir).unwrap();
    std::fs::write(busy.data_dir.join("x"), b"x").unwrap();
    let error = librarian::backup::restore(&backup, &busy).unwrap_err();
    assert!(
        matches!(
            error,
            LibrarianBackupError::Backup(BackupError::NotEmpty { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("is not empty"), "{error}");

    // A blob file altered (one byte flipped, same size): refused, naming the file, and
    // nothing written (no data directory, no staging copy beside it).
    let hex = blake3::hash(&big.bytes).to_hex().to_string();
    let blob = backup
        .join("blobs")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex);
    let original = std::fs::read(&blob).unwrap();
    let mut altered = original.clone();
    altered[1234] ^= 0x40;
    std::fs::write(&blob, &altered).unwrap();
    let target = librarian_store_config(root.path().join("restored"));
    let error = librarian::backup::restore(&backup, &target).unwrap_err();
    assert!(
        matches!(
            error,
            LibrarianBackupError::Backup(BackupError::Damaged { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains(&hex), "{error}");
    let leftovers: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!target.data_dir.exists(), "{leftovers:?}");
    assert!(
        !leftovers.iter().any(|name| name.contains("restoring")),
        "{leftovers:?}"
    );

    // Without its manifest: not a backup.
    std::fs::write(&blob, &original).unwrap();
    std::fs::rename(
        backup.join("manifest.json"),
        root.path().join("manifest.json"),
    )
    .unwrap();
    let error = librarian::backup::restore(&backup, &target).unwrap_err();
    assert!(
        matches!(
            error,
            LibrarianBackupError::Backup(BackupError::NoManifest { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("manifest.json"), "{error}");
    assert!(!target.data_dir.exists());

    // Mended, it restores and serves the bytes.
    std::fs::rename(
        root.path().join("manifest.json"),
        backup.join("manifest.json"),
    )
    .unwrap();
    librarian::backup::restore(&backup, &target).unwrap();
    let restored = open_librarian(&target);
    assert_eq!(read_all(&restored, big.id), big.bytes);
    // The resumable upload resumes where its acknowledged bytes ended, and finishes whole.
    assert_eq!(restored.upload_status(upload_id).unwrap().offset, 25_000);
    let patched = restored
        .append_upload(upload_id, 25_000, &mut &resumable[25_000..], None)
        .unwrap();
    let finished = patched.finished.expect("the last append finishes it");
    assert_eq!(read_all(&restored, finished.record.id.0), resumable);
}

fn graph_config(data_dir: PathBuf) -> GraphConfig {
    GraphConfig {
        data_dir,
        ..GraphConfig::default()
    }
}

async fn start_directory(config: &GraphConfig) -> (Running, Arc<dyn Engine>) {
    let (graph, commits) = config.open().unwrap();
    let engine = Arc::clone(graph.engine());
    let state = Directory::new(graph, commits, &server_config())
        .unwrap()
        .with_store_config(config.clone());
    (Running::serve(directory::app(state)).await, engine)
}

/// The 40-hex id of commit `n`.
fn commit(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

/// The answers compared between a directory and its restored copy.
const DIRECTORY_READS: &[&str] = &[
    "/export/teams",
    "/export/packagesets",
    "/teams/core/members",
    "/teams/core/members?type=person",
    "/teams/core/members/alice",
    "/persons/alice/teams",
    "/persons/carol/relations?relation=member",
    "/teams/core/holders/admin",
    "/packagesets/desktop/packages",
    "/packages/gedit/packagesets",
    "/graphs/deps/edges",
    "/graphs/deps/reachable?from=app&to=libc&path=true",
    "/graphs/deps/nodes/libc/ancestors",
    "/repos/r/branches/main/merged",
    "/repos/r/branches/topic/merged-into/main",
    "/repos/r/branches/main/history",
    "/changes?after=0&limit=1000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_backup_under_load_restores_exactly_the_acknowledged_writes() {
    let root = tempfile::tempdir().unwrap();
    let config = graph_config(root.path().join("live"));
    let (server, live_engine) = start_directory(&config).await;

    // Teams, roles, package sets, a graph, a repository with branches.
    for (path, body) in [
        ("/teams/core", json!(null)),
        ("/teams/core/members/alice", json!({"role": "member"})),
        ("/teams/core/members/bob", json!({"role": "admin"})),
        ("/teams/desktop-team", json!(null)),
        (
            "/teams/desktop-team/members/carol",
            json!({"role": "member"}),
        ),
        (
            "/teams/core/members/desktop-team",
            json!({"role": "member"}),
        ),
        ("/packagesets/desktop/items/gedit", json!(null)),
        ("/packagesets/desktop/items/firefox", json!(null)),
        ("/graphs/deps", json!({"kind": "acyclic"})),
        ("/graphs/deps/edges/app/lib", json!(null)),
        ("/graphs/deps/edges/lib/libc", json!(null)),
    ] {
        let response = server.put(path, body).await;
        assert_eq!(response.status(), 200, "PUT {path}");
    }
    let response = client()
        .post(server.url("/repos/r/commits"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/plain")
        .body(format!(
            "{} {}\n{} {}\n{}\n",
            commit(3),
            commit(1),
            commit(2),
            commit(1),
            commit(1)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for (branch, tip) in [("main", commit(2)), ("topic", commit(1))] {
        let response = server
            .put(&format!("/repos/r/branches/{branch}"), json!({"tip": tip}))
            .await;
        assert_eq!(response.status(), 200);
    }

    // Three writers add memberships until told to stop; the backup is taken in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/teams/load-{w}/members/p{w}-{i}");
                    let response = client()
                        .put(format!("http://{addr}{path}"))
                        .basic_auth(USER, Some(PASSWORD))
                        .json(&json!({"role": "member"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let revision: u64 = response.headers()["x-revision"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    acked.push((format!("/teams/load-{w}/members/p{w}-{i}"), revision));
                    i += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let backup_dir = root.path().join("backup");
    let answer = server.backup_done(&backup_dir).await;
    let revision = answer["revision"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut loaded = Vec::new();
    for writer in writers {
        loaded.extend(writer.await.unwrap());
    }
    let after = loaded.iter().filter(|(_, r)| *r > revision).count();
    let before = loaded.iter().filter(|(_, r)| *r <= revision).count();
    assert!(
        before > 0 && after > 0,
        "{before} writes before the backup's revision, {after} after"
    );

    let restored_config = graph_config(root.path().join("restored"));
    let manifest = directory::backup::restore(&backup_dir, &restored_config).unwrap();
    assert_eq!(manifest.revision, revision);
    let (restored, _) = start_directory(&restored_config).await;
    for (path, at) in &loaded {
        let (status, body) = restored.get(path).await;
        let expected = if *at <= revision { 200 } else { 404 };
        assert_eq!(
            status, expected,
            "{path} at revision {at}, backup at {revision}: {body}"
        );
    }
    // The feed: the live events up to the revision, exactly.
    let (_, live_changes) = server.get("/changes?after=0&limit=1000").await;
    let (_, restored_changes) = restored.get("/changes?after=0&limit=1000").await;
    let events = |body: &str| -> Vec<Value> {
        let value: Value = serde_json::from_str(body).unwrap();
        value["changes"].as_array().unwrap().clone()
    };
    let live_up_to: Vec<Value> = events(&live_changes)
        .into_iter()
        .filter(|e| e["revision"].as_u64().unwrap() <= revision)
        .collect();
    let restored_events = events(&restored_changes);
    assert!(!restored_events.is_empty());
    if restored_events.len() < 1000 {
        assert_eq!(restored_events, live_up_to[..restored_events.len()]);
        assert_eq!(restored_events.last().unwrap()["revision"], revision);
    } else {
        assert_eq!(restored_events, live_up_to[..1000]);
    }
    restored.stop().await;

    // Quiet now: a second backup answers every read like the original, holds every key.
    let quiet_dir = root.path().join("quiet");
    server.backup_done(&quiet_dir).await;
    let quiet_config = graph_config(root.path().join("quiet-restored"));
    directory::backup::restore(&quiet_dir, &quiet_config).unwrap();
    let (quiet, quiet_engine) = start_directory(&quiet_config).await;
    for path in DIRECTORY_READS {
        let (live_status, live_body) = server.get(path).await;
        assert_eq!(live_status, 200, "{path}: {live_body}");
        assert_eq!(quiet.get(path).await, (live_status, live_body), "{path}");
    }
    for (path, _) in &loaded {
        assert_eq!(quiet.get(path).await.0, 200, "{path}");
    }
    let keyspaces = directory::config::keyspaces();
    assert_eq!(
        everything(quiet_engine.as_ref(), &keyspaces),
        everything(live_engine.as_ref(), &keyspaces)
    );
    quiet.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_restore_refuses_damaged_backups() {
    let root = tempfile::tempdir().unwrap();
    let config = graph_config(root.path().join("live"));
    let (server, _) = start_directory(&config).await;
    let response = server
        .put("/teams/core/members/alice", json!({"role": "member"}))
        .await;
    assert_eq!(response.status(), 200);
    let occupied = root.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep"), b"mine").unwrap();
    let response = server.backup(&occupied).await;
    assert_eq!(response.status(), 409);
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);
    let backup = root.path().join("backup");
    server.backup_done(&backup).await;
    server.stop().await;

    // A table file of the checkpoint altered: refused, nothing written. (Altered by
    // replacing it: a checkpoint's table files are hard links to the live store's.)
    let manifest = engine::backup::read_manifest(&backup).unwrap();
    let table = manifest
        .files
        .iter()
        .find(|f| {
            let sst = std::path::Path::new(&f.path)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("sst"));
            sst && f.size > 100
        })
        .expect("a table file")
        .path
        .clone();
    let path = backup.join(&table);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[50] ^= 1;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let target = graph_config(root.path().join("restored"));
    let error = directory::backup::restore(&backup, &target).unwrap_err();
    assert!(error.to_string().contains(&table), "{error}");
    assert!(!target.data_dir.exists());

    std::fs::remove_file(backup.join("manifest.json")).unwrap();
    let error = directory::backup::restore(&backup, &target).unwrap_err();
    assert!(error.to_string().contains("no manifest.json"), "{error}");
    assert!(!target.data_dir.exists());
    assert!(std::fs::read_dir(root.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("restoring")));
}
