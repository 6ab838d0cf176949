//! The figures of issue 17 for resumable and idempotent uploads, measured over loopback
//! against an in-process librarian on RocksDB and the disk (`blobstore/DESIGN.md` and
//! `docs/API.md` quote them). A measurement program, not a criterion group: it prints its
//! figures (several GiB written; files under `BLOBSTORE_BENCH_DIR`, default
//! `~/.cache/lpstore/bench`, which must not be tmpfs).
//!
//! `cargo bench -p benches --bench tus` (`TUS_RUNS`, default 3: the 1 GiB runs)

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{cpu_seconds, disk_dir};
use blobstore::{ManualClock, StoreBuilder, Timestamp};
use bytes::Bytes;
use servers::common::access::hash_password;
use servers::common::{serve, Credential, Limits, ServerConfig};
use servers::librarian::{self, Librarian};
use tokio::sync::oneshot;

const MIB: usize = 1 << 20;
const USER: &str = "writer";
const PASSWORD: &str = "correct horse";

/// A librarian on 127.0.0.1 over RocksDB on the disk, with a manual clock (for GC).
struct Server {
    addr: SocketAddr,
    state: Librarian,
    clock: Arc<ManualClock>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn rocksdb_server() -> Server {
    let dir = disk_dir();
    let clock = Arc::new(ManualClock::at_millis(Timestamp::now().as_unix_millis()));
    let store = StoreBuilder::new(
        engine::EngineConfig::new(engine::Backend::Rocksdb, dir.path().join("meta")),
        dir.path().join("data"),
    )
    .clock(clock.clone())
    .open()
    .unwrap();
    let limits = Limits {
        max_body_bytes: 4 << 30,
        body_timeout_secs: 600,
        ..Limits::default()
    };
    let config = ServerConfig {
        credentials: vec![Credential {
            user: USER.into(),
            hash: hash_password(PASSWORD),
        }],
        allowed_cidrs: servers::common::config::loopback_cidrs(),
        limits: limits.clone(),
        ..ServerConfig::default()
    };
    let state = Librarian::new(store, &config).unwrap();
    let app = librarian::router(state.clone());
    let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        state,
        clock,
        stop,
        task,
        _dir: dir,
    }
}

/// `n` bytes of a fixed pseudo-random pattern, distinct per seed.
fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn tus(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    builder
        .basic_auth(USER, Some(PASSWORD))
        .header("tus-resumable", "1.0.0")
}

async fn create(server: &Server, client: &reqwest::Client, length: usize, name: &str) -> String {
    let response = tus(client.post(server.url("/buckets/figures/uploads")))
        .header("upload-length", length.to_string())
        .header("upload-metadata", format!("filename {}", base64_of(name)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.url(response.headers()["location"].to_str().unwrap())
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn patch(
    client: &reqwest::Client,
    url: &str,
    offset: usize,
    body: reqwest::Body,
) -> reqwest::Response {
    tus(client.patch(url))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let server = rocksdb_server().await;
    let client = reqwest::Client::new();
    let size = 1024 * MIB;
    // Distinct content per run, so that nothing deduplicates.
    let runs: u64 = std::env::var("TUS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for run in 0..runs {
        let data = Bytes::from(content(size, 100 + run));
        let cpu = cpu_seconds();
        let started = Instant::now();
        let response = client
            .post(server.url(&format!("/buckets/figures/files?filename=post{run}.iso")))
            .basic_auth(USER, Some(PASSWORD))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let post = started.elapsed();
        let post_cpu = cpu_seconds() - cpu;
        let posted: serde_json::Value = response.json().await.unwrap();

        let data = Bytes::from(content(size, 200 + run));
        let cpu = cpu_seconds();
        let started = Instant::now();
        let url = create(&server, &client, size, &format!("tus{run}.iso")).await;
        let mut finished = None;
        for offset in (0..size).step_by(8 * MIB) {
            let piece = data.slice(offset..offset + 8 * MIB);
            let response = patch(&client, &url, offset, piece.into()).await;
            assert_eq!(response.status(), 204);
            finished = response
                .headers()
                .get("x-file-id")
                .map(|v| v.to_str().unwrap().parse().unwrap());
        }
        let tus_time = started.elapsed();
        let tus_cpu = cpu_seconds() - cpu;
        // Free the disk for the next run (the machine's disk is shared and small).
        for id in [posted["id"].as_u64().unwrap(), finished.unwrap()] {
            server
                .state
                .store()
                .delete_file(blobstore::FileId(id), "figures")
                .unwrap();
        }
        server.clock.advance(Duration::from_secs(2 * 86_400));
        server.state.store().gc(1000).unwrap();
        let rate = |t: Duration| size as f64 / MIB as f64 / t.as_secs_f64();
        println!(
            "run {run}: 1 GiB POST {post:.2?} ({:.0} MiB/s); tus, 128 PATCHes of 8 MiB {tus_time:.2?} ({:.0} MiB/s) = {:.0}% of the POST rate",
            rate(post),
            rate(tus_time),
            100.0 * post.as_secs_f64() / tus_time.as_secs_f64()
        );
        println!(
            "run {run}: CPU time of the process (server and client): POST {post_cpu:.2} s, tus {tus_cpu:.2} s (load average {})",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
        );
    }

    // A client that dies at 50%: what the server kept, hence what a resume sends again.
    let data = Bytes::from(content(size, 300));
    let url = create(&server, &client, size, "cut.iso").await;
    let half = size / 2;
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..half)
        .step_by(MIB)
        .map(|o| Ok(data.slice(o..o + MIB)))
        .chain(std::iter::once(Err(std::io::Error::other("client killed"))))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let _ = tus(client.patch(&url))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(body)
        .send()
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let head = tus(client.head(&url)).send().await.unwrap();
    let kept: usize = head.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let resent = size - kept;
    println!(
        "killed at 50% ({half} bytes sent): the server kept {kept}; the resume sends {resent} bytes = {:.2}% of the file ({} bytes sent twice)",
        100.0 * resent as f64 / size as f64,
        half - kept
    );
    assert_eq!(
        patch(&client, &url, kept, data.slice(kept..).into())
            .await
            .status(),
        204
    );

    // Idempotency-Key on 4 KiB uploads: sequential, alternating rounds with and without.
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..6 {
        for i in 0..300 {
            let keyed = (round + i) % 2 == 0;
            let body = content(4096, 10_000_000 + round * 1000 + i);
            let mut request = client
                .post(server.url(&format!("/buckets/small/files?filename=f{round}_{i}")))
                .basic_auth(USER, Some(PASSWORD))
                .body(body);
            if keyed {
                request = request.header("idempotency-key", format!("key-{round}-{i}"));
            }
            let started = Instant::now();
            assert_eq!(request.send().await.unwrap().status(), 201);
            if keyed {
                with.push(started.elapsed())
            } else {
                without.push(started.elapsed())
            }
        }
    }
    with.sort();
    without.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "4 KiB uploads, {} each: with Idempotency-Key median {:.2?} mean {:.2?}; without median {:.2?} mean {:.2?}; median +{:.1}%",
        with.len(),
        median(&with),
        mean(&with),
        median(&without),
        mean(&without),
        100.0 * (median(&with).as_secs_f64() / median(&without).as_secs_f64() - 1.0)
    );
    server.stop().await;
}
