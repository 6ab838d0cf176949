//! The figures of issue 17 for resumable and idempotent uploads, measured over loopback
//! against an in-process librarian on RocksDB and the disk (`blobstore/DESIGN.md` and
//! `docs/API.md` quote them). A measurement, not a test:
//!
//! `cargo test --release -p servers --test it tus_figures -- --ignored --nocapture`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::{content, Options, TestServer, PASSWORD, USER};

const MIB: usize = 1 << 20;

async fn rocksdb_server() -> TestServer {
    let dir = Arc::new(tempfile::tempdir_in(std::env::temp_dir()).unwrap());
    let engine = engine::EngineConfig::new(engine::Backend::Rocksdb, dir.path().join("meta"))
        .open(blobstore::KEYSPACES)
        .unwrap();
    let clock = Arc::new(blobstore::ManualClock::new(blobstore::Timestamp::now()));
    let mut options = Options::default();
    options.limits.max_body_bytes = 4 << 30;
    options.limits.body_timeout_secs = 600;
    TestServer::start_over(engine, dir, clock, options).await
}

fn tus(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    builder
        .basic_auth(USER, Some(PASSWORD))
        .header("tus-resumable", "1.0.0")
}

async fn create(
    server: &TestServer,
    client: &reqwest::Client,
    length: usize,
    name: &str,
) -> String {
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

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: writes several GiB"]
async fn tus_figures() {
    let server = rocksdb_server().await;
    let client = reqwest::Client::new();
    let size = 1024 * MIB;
    // Distinct content per run, so that nothing deduplicates.
    let runs = 3;
    for run in 0..runs {
        let data = Bytes::from(content(size, 100 + run));
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
        let posted: serde_json::Value = response.json().await.unwrap();

        let data = Bytes::from(content(size, 200 + run));
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
