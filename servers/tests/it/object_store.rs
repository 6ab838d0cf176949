//! The librarian with its blob bytes on a real Swift (native API and S3 API), started by
//! `scripts/with-swift.sh` (as `make test` does), which exports the addresses and credentials
//! read here.
//!
//! The store is opened through [`LibrarianConfig::open_store`] from TOML, as the binary does,
//! and outside the Tokio runtime: the object store's clients run runtimes of their own, which
//! may not be dropped from async code. Each test therefore builds its runtime itself.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use servers::common::access::hash_password;
use servers::common::{serve, Credential};
use servers::librarian::{self, Librarian, LibrarianConfig, OpenedStore};
use tokio::sync::oneshot;

use crate::support::{content, PASSWORD, USER};

const LIBRARIAN: &str = env!("CARGO_BIN_EXE_librarian");

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a real Swift. Run them under \
             `scripts/with-swift.sh cargo test -p servers` (or `make test`), or start one with \
             `scripts/swift-saio.sh start DIR` and `source DIR/env`"
        )
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Swift,
    S3,
}

/// The TOML value of `protocol` for the environment's Swift.
fn protocol_toml(protocol: Protocol) -> String {
    match protocol {
        Protocol::Swift => format!(
            r#"{{ type = "swift", auth_url = "{}", user = "{}", key = "{}" }}"#,
            env("SWIFT_AUTH_URL"),
            env("SWIFT_USER"),
            env("SWIFT_KEY")
        ),
        Protocol::S3 => format!(
            r#"{{ type = "s3", endpoint = "{}", region = "{}", access_key = "{}", secret_key = "{}" }}"#,
            env("S3_ENDPOINT"),
            env("S3_REGION"),
            env("S3_ACCESS_KEY"),
            env("S3_SECRET_KEY")
        ),
    }
}

/// A librarian configuration: `[store]` under `dir`, `[object_store]` with `protocol` (a
/// TOML inline table), a fresh container prefix and `retry`.
fn config(dir: &Path, engine: &str, protocol: &str, retry: &str) -> LibrarianConfig {
    let prefix = format!("lib{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let text = format!(
        r#"
        [store]
        backend = "{engine}"
        data_dir = "{data}"
        token_secret = "{secret}"
        gc_interval_secs = 0

        [object_store]
        protocol = {protocol}
        container_prefix = "{prefix}"
        spool_dir = "{spool}"
        retry = {retry}
        "#,
        data = dir.join("data").display(),
        spool = dir.join("spool").display(),
        secret = "ab".repeat(32),
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const RETRY: &str = "{ initial_backoff_ms = 20, max_backoff_ms = 500, budget_ms = 10000 }";

/// Runs `f` on a fresh runtime with a librarian serving `opened` on 127.0.0.1:0, then drops
/// the runtime before `opened` (see the module's comment).
fn with_server<F, Fut>(opened: &OpenedStore, f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = servers::common::ServerConfig {
        credentials: vec![Credential {
            user: USER.into(),
            hash: hash_password(PASSWORD),
        }],
        ..servers::common::ServerConfig::default()
    };
    let mut state = Librarian::new(opened.store.clone(), &server).unwrap();
    if let Some(backends) = &opened.object_store {
        state = state.with_object_store(backends.object_store.clone());
    }
    runtime.block_on(async move {
        let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::serve(
            listener,
            librarian::router(state),
            server.limits.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        f(base).await;
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    });
    drop(runtime);
}

async fn upload(base: &str, bucket: &str, name: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/buckets/{bucket}/files?filename={name}"))
        .basic_auth(USER, Some(PASSWORD))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn download(base: &str, url: &str) -> Vec<u8> {
    let response = reqwest::get(format!("{base}{url}")).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.bytes().await.unwrap().to_vec()
}

/// The blob files under `data_dir/blobs`.
fn local_blob_files(data_dir: &Path) -> u64 {
    servers::librarian::migrate::local_blobs(data_dir)
        .unwrap()
        .blobs
}

fn uploads_and_downloads_over(protocol: Protocol) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "memory", &protocol_toml(protocol), RETRY);
    let opened = config.open_store().unwrap();
    let object_store = opened.object_store.as_ref().unwrap().object_store.clone();
    let big = content(300_000, 1);
    let small = content(1_000, 2);
    let mut hashes = Vec::new();
    with_server(&opened, |base| {
        let hashes = &mut hashes;
        let mut urls = Vec::new();
        let (big, small) = (big.clone(), small.clone());
        async move {
            let (status, health) = get_json(&base, "/health").await;
            assert_eq!(status, 200, "{health}");
            assert_eq!(health["status"], "ok", "{health}");
            assert_eq!(health["stale"], false, "{health}");
            for (name, bytes) in [("big.bin", &big), ("small.txt", &small)] {
                let response = upload(&base, "os", name, bytes.clone()).await;
                assert_eq!(response.status(), 201, "{name}");
                let record: serde_json::Value = response.json().await.unwrap();
                assert_eq!(record["size"], bytes.len());
                assert_eq!(
                    download(&base, record["url"].as_str().unwrap()).await,
                    *bytes
                );
                hashes.push(record["blake3"].as_str().unwrap().to_string());
                urls.push(format!("{base}{}", record["url"].as_str().unwrap()));
            }
            let big_url = &urls[0];
            // Ranges of the object-store blob, as apt and `curl -C -` ask for them.
            let response = reqwest::Client::new()
                .get(big_url)
                .header("range", "bytes=100000-199999")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 206);
            assert_eq!(
                response.headers()["content-range"],
                "bytes 100000-199999/300000"
            );
            assert_eq!(response.bytes().await.unwrap(), big[100_000..200_000]);
            let response = reqwest::Client::new()
                .get(big_url)
                .header("range", "bytes=299990-")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 206);
            assert_eq!(response.bytes().await.unwrap(), big[299_990..]);
            let response = reqwest::Client::new()
                .get(big_url)
                .header("range", "bytes=300000-")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 416);
        }
    });
    // The big blob's bytes are in the object store and not on local disk; the small one is
    // inline in the engine.
    let big_hash: blobstore::Blake3Hash = hashes[0].parse().unwrap();
    let small_hash: blobstore::Blake3Hash = hashes[1].parse().unwrap();
    assert!(object_store.container_of(&big_hash).unwrap().is_some());
    assert!(object_store.exists(&big_hash).unwrap());
    assert!(object_store.container_of(&small_hash).unwrap().is_none());
    assert_eq!(local_blob_files(&config.store.data_dir), 0);
}

#[test]
fn swift_uploads_and_downloads_with_ranges() {
    uploads_and_downloads_over(Protocol::Swift);
}

#[test]
fn s3_uploads_and_downloads_with_ranges() {
    uploads_and_downloads_over(Protocol::S3);
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_dead_object_store_answers_503_records_nothing_and_fails_health() {
    let dir = tempfile::tempdir().unwrap();
    let live = config(
        dir.path(),
        "rocksdb",
        &protocol_toml(Protocol::Swift),
        RETRY,
    );
    // A blob stored while the object store was up.
    let stored = content(50_000, 5);
    let stored_id = {
        let opened = live.open_store().unwrap();
        let request = blobstore::UploadRequest::new(
            blobstore::BucketName::new("down").unwrap(),
            "stored.bin",
        );
        let record = opened
            .store
            .upload_bytes(request, &stored, "tester")
            .unwrap()
            .record;
        opened.store.flush().unwrap();
        record.id
    };
    // The same store with the object store's address now a dead port.
    let port = dead_port();
    let mut dead = live.clone();
    let object_store = dead.object_store.as_mut().unwrap();
    object_store.protocol = objectstore::ObjectStoreConfig::swift(
        format!("http://127.0.0.1:{port}/auth/v1.0"),
        "test:tester",
        "testing",
    )
    .protocol;
    object_store.retry = objectstore::RetryConfig::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        Duration::from_millis(300),
    );
    let opened = dead.open_store().unwrap();
    with_server(&opened, |base| async move {
        // Inline content never touches the object store.
        let small = content(100, 3);
        let response = upload(&base, "down", "small.txt", small.clone()).await;
        assert_eq!(response.status(), 201);
        let record: serde_json::Value = response.json().await.unwrap();
        let (_, before) = get_json(&base, "/buckets/down").await;
        assert_eq!(before["files"], 2);
        let (_, summary_before) = get_json(&base, "/stats").await;

        // A blob for the object store: 503 unavailable with Retry-After, no internal text.
        let response = upload(&base, "down", "big.bin", content(100_000, 4)).await;
        assert_unavailable(response, port).await;

        // Nothing was recorded.
        let (_, after) = get_json(&base, "/buckets/down").await;
        assert_eq!(after, before);
        let (_, summary_after) = get_json(&base, "/stats").await;
        assert_eq!(summary_after, summary_before);
        let (status, listing) = get_json(&base, "/buckets/down/files").await;
        assert_eq!(status, 200);
        let names: Vec<&str> = listing["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["filename"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["stored.bin", "small.txt"]);

        // /health names the object store.
        let (status, health) = get_json(&base, "/health").await;
        assert_eq!(
            (status, health),
            (
                503,
                serde_json::json!({"status": "degraded", "failing": ["object_store"]})
            )
        );
        // Content on the object store cannot be read now (503 again); inline content can.
        let response = reqwest::get(format!("{base}/{stored_id}/stored.bin"))
            .await
            .unwrap();
        assert_unavailable(response, port).await;
        assert_eq!(
            download(&base, record["url"].as_str().unwrap()).await,
            small
        );
    });
    drop(opened);
    assert_eq!(local_blob_files(&dead.store.data_dir), 0);

    // Back up: the blob stored before is still there, and nothing else reached the store.
    let opened = live.open_store().unwrap();
    with_server(&opened, |base| {
        let stored = &stored;
        async move {
            let url = format!("/{stored_id}/stored.bin");
            assert_eq!(download(&base, &url).await, *stored);
            let (_, stats) = get_json(&base, "/buckets/down").await;
            assert_eq!(stats["files"], 2);
            assert_eq!(stats["logical_bytes"], 50_000 + 100);
        }
    });
}

/// A 503 `unavailable` with `Retry-After` whose body names neither the host nor the port.
async fn assert_unavailable(response: reqwest::Response, port: u16) {
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    let body = response.text().await.unwrap();
    assert!(!body.contains("127.0.0.1"), "{body}");
    assert!(!body.contains(&port.to_string()), "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
}

fn run_librarian(config_file: &Path, args: &[&str]) -> std::process::Output {
    Command::new(LIBRARIAN)
        .arg("--config")
        .arg(config_file)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("LIBRARIAN_OBJECT_STORE_SECRET")
        .output()
        .unwrap()
}

#[test]
fn migrate_blobs_moves_file_blobs_and_downloads_still_match() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("mig{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    // The key comes from the environment variable, not the file.
    let text = format!(
        r#"
        [store]
        backend = "rocksdb"
        data_dir = "{data}"
        token_secret = "{secret}"

        [object_store]
        protocol = {{ type = "swift", auth_url = "{auth}", user = "{user}", key = "not-the-key" }}
        container_prefix = "{prefix}"
        spool_dir = "{spool}"
        retry = {{ initial_backoff_ms = 20, max_backoff_ms = 500, budget_ms = 3000 }}
        "#,
        data = dir.path().join("data").display(),
        spool = dir.path().join("spool").display(),
        secret = "cd".repeat(32),
        auth = env("SWIFT_AUTH_URL"),
        user = env("SWIFT_USER"),
    );
    let config_file = dir.path().join("librarian.toml");
    std::fs::write(&config_file, &text).unwrap();
    let mut config: LibrarianConfig = toml::from_str(&text).unwrap();

    // A local store: inline blobs (up to 16 KiB) and blob files, one of them twice.
    let local = LibrarianConfig {
        object_store: None,
        ..config.clone()
    };
    let store = local.open_store().unwrap().store;
    let threshold = blobstore::DEFAULT_INLINE_THRESHOLD;
    let sizes = [0, 10, threshold, threshold + 1, 100_000, 1 << 20, 100_000];
    let mut files = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        // The last one repeats the fifth's content: one blob, two files.
        let seed = if i == 6 { 4 } else { i as u64 };
        let bytes = content(*size, 10 + seed);
        let request = blobstore::UploadRequest::new(
            blobstore::BucketName::new("mig").unwrap(),
            format!("f{i}"),
        );
        files.push((
            store
                .upload_bytes(request, &bytes, "tester")
                .unwrap()
                .record,
            bytes,
        ));
    }
    store.flush().unwrap();
    drop(store);
    let data_dir = &config.store.data_dir;
    assert_eq!(local_blob_files(data_dir), 3);

    // A wrong key: nothing moves, the local files stay, exit 1.
    let out = run_librarian(&config_file, &["migrate-blobs"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["moved"], 0);
    assert_eq!(report["failed"], 3);
    assert_eq!(local_blob_files(data_dir), 3);

    let key = env("SWIFT_KEY");
    let run = |args: &[&str]| {
        Command::new(LIBRARIAN)
            .arg("--config")
            .arg(&config_file)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("LIBRARIAN_OBJECT_STORE_SECRET", &key)
            .output()
            .unwrap()
    };
    let out = run(&["migrate-blobs", "--parallelism", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 blob files"), "{stderr}");
    assert!(stderr.contains("uploaded 3 of 3 blobs"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report,
        serde_json::json!({
            "pending": 3, "moved": 3, "moved_bytes": threshold + 1 + 100_000 + (1 << 20),
            "failed": 0, "remaining": 0,
        })
    );
    assert_eq!(local_blob_files(data_dir), 0);

    // Resuming a finished migration finds nothing to do.
    let out = run(&["migrate-blobs"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["moved"], 0);
    assert_eq!(report["pending"], 0);
    // And the store is consistent: every blob verifies, from the object store.
    let out = run(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Served from the object store, every file downloads as uploaded.
    let flags = servers::librarian::config::StoreFlags {
        object_store_secret: Some(key.clone()),
        ..Default::default()
    };
    config.apply_flags(&flags).unwrap();
    let opened = config.open_store().unwrap();
    let object_store = opened.object_store.as_ref().unwrap().object_store.clone();
    with_server(&opened, |base| {
        let files = &files;
        async move {
            for (record, bytes) in files {
                let url = format!("/{}/{}", record.id, record.filename);
                assert_eq!(download(&base, &url).await, *bytes, "{url}");
            }
            let (status, _) = get_json(&base, "/health").await;
            assert_eq!(status, 200);
        }
    });
    for (record, bytes) in &files {
        let remote = object_store.container_of(&record.blake3).unwrap();
        assert_eq!(
            remote.is_some(),
            bytes.len() > threshold,
            "{}",
            record.filename
        );
    }
}
