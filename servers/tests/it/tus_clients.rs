//! A real tus client against the real `librarian` binary: PyPI's `tuspy` (installed by
//! `scripts/tuspy.sh`, pinned by hash, into a virtualenv under `~/.cache/lpstore/`) uploads
//! 24 MiB in 1 MiB PATCHes with a SHA-1 checksum each; the client is SIGKILLed mid-upload
//! and resumes from the server's offset; then the *server* is SIGKILLed mid-upload and
//! restarted over the same data directory, and resumes at the offset it acknowledged; the
//! finished file has the uploaded bytes and their SHA-256.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::soak::Server;
use crate::support::content;

const LIBRARIAN: &str = env!("CARGO_BIN_EXE_librarian");
const MIB: u64 = 1 << 20;

fn script() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../scripts/tuspy.sh")
}

/// Installs tuspy if missing; fails the test if it cannot be.
fn install_tuspy() {
    let status = Command::new(script())
        .arg("python")
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/tuspy.sh");
    assert!(status.success(), "scripts/tuspy.sh could not install tuspy");
}

/// One run of the client, whose JSON lines are read as they come.
struct TusClient {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl TusClient {
    fn start(endpoint: &str, file: &Path, storage: &Path) -> TusClient {
        let mut child = Command::new(script())
            .arg("run")
            .arg(endpoint)
            .arg(file)
            .arg(storage)
            .args(["--chunk", &MIB.to_string(), "--pause", "0.05"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the tus client");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        TusClient { child, lines }
    }

    /// The next event, or `None` when the client ended.
    fn next(&mut self) -> Option<serde_json::Value> {
        let line = self.lines.next()?.ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")))
    }

    /// Reads events until an acknowledged offset of at least `at`; returns it.
    fn until_offset(&mut self, at: u64) -> u64 {
        loop {
            let event = self.next().expect("the client ended early");
            if event["event"] == "chunk" && event["offset"].as_u64().unwrap() >= at {
                return event["offset"].as_u64().unwrap();
            }
        }
    }

    fn kill(mut self) {
        // The client is `exec`ed by the script: this is the Python process.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn head_offset(url: &str) -> (u64, Option<String>) {
    let response = reqwest::Client::new()
        .head(url)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "HEAD {url}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    (
        header("upload-offset").unwrap().parse().unwrap(),
        header("x-file-id"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tuspy_resumes_after_client_and_server_kills() {
    install_tuspy();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let file = dir.path().join("disc.iso");
    let storage = dir.path().join("tus-urls.json");
    let data = content((24 * MIB) as usize, 17);
    std::fs::write(&file, &data).unwrap();

    let mut server = Server::start(LIBRARIAN, &data_dir).await;
    let endpoint = server.url("/buckets/isos/uploads");

    // 1. The client is killed after 6 MiB were acknowledged.
    let client = {
        let endpoint = endpoint.clone();
        let (file, storage) = (file.clone(), storage.clone());
        tokio::task::spawn_blocking(move || {
            let mut client = TusClient::start(&endpoint, &file, &storage);
            let start = client.next().unwrap();
            assert_eq!(start["offset"], 0);
            let acked = client.until_offset(6 * MIB);
            client.kill();
            (start["url"].as_str().unwrap().to_string(), acked)
        })
    };
    let (url, acked) = client.await.unwrap();
    let (offset, _) = head_offset(&url).await;
    assert!(
        offset == acked || offset == acked + MIB,
        "after the client's kill the server is at {offset}, the client saw {acked}"
    );

    // 2. A new client resumes where the server is; then the server is killed at 14 MiB.
    let (file2, storage2, endpoint2) = (file.clone(), storage.clone(), endpoint.clone());
    let client =
        tokio::task::spawn_blocking(move || TusClient::start(&endpoint2, &file2, &storage2))
            .await
            .unwrap();
    let (start, mut client) = tokio::task::spawn_blocking(move || {
        let mut client = client;
        let start = client.next().unwrap();
        (start, client)
    })
    .await
    .unwrap();
    assert_eq!(
        start["url"].as_str().unwrap(),
        url,
        "tuspy found its upload again"
    );
    assert_eq!(
        start["offset"].as_u64().unwrap(),
        offset,
        "resumed at the server's offset"
    );
    let (acked, client) = tokio::task::spawn_blocking(move || {
        let acked = client.until_offset(14 * MIB);
        (acked, client)
    })
    .await
    .unwrap();
    server.kill();
    client.kill();
    // The restarted server listens on another port: the upload's URL follows it.
    let server = Server::start(LIBRARIAN, &data_dir).await;
    let old_base = endpoint.replace("/buckets/isos/uploads", "");
    let url = url.replace(&old_base, &server.url(""));
    let (offset, _) = head_offset(&url).await;
    assert!(
        offset == acked || offset == acked + MIB,
        "after the server's kill it resumes at {offset}; the client saw {acked} acknowledged"
    );

    // 3. A third client finishes, from the URL tuspy stored (moved to the new port).
    let stored = std::fs::read_to_string(&storage).unwrap();
    std::fs::write(&storage, stored.replace(&old_base, &server.url(""))).unwrap();
    let endpoint3 = server.url("/buckets/isos/uploads");
    let (file3, storage3) = (file.clone(), storage.clone());
    let events = tokio::task::spawn_blocking(move || {
        let mut client = TusClient::start(&endpoint3, &file3, &storage3);
        let mut events = Vec::new();
        while let Some(event) = client.next() {
            events.push(event);
        }
        assert!(
            client.child.wait().unwrap().success(),
            "the client failed: {events:?}"
        );
        events
    })
    .await
    .unwrap();
    assert_eq!(events[0]["offset"].as_u64().unwrap(), offset, "{events:?}");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done", "{events:?}");
    let id = done["file"].as_u64().unwrap();
    let (end, file_id) = head_offset(&url).await;
    assert_eq!((end, file_id), (24 * MIB, Some(id.to_string())));

    let record: serde_json::Value = reqwest::get(server.url(&format!("/files/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["size"], 24 * MIB);
    assert_eq!(record["filename"], "disc.iso");
    assert_eq!(record["sha256"], blobstore::to_hex(&Sha256::digest(&data)));
    let body = reqwest::get(server.url(&format!("/{id}/disc.iso")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body[..] == data[..], "the downloaded file differs");
}
