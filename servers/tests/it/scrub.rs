//! The online scrub while the librarian serves: a clean store reports nothing; a blob
//! damaged behind the server's back is found by the background task, reported by `GET
//! /scrub`, `/metrics` and the change feed, and its downloads answer 500 `corrupt`.

use std::time::Duration;

use blobstore::testing::corrupt_blob;
use blobstore::{Blake3Hash, LocalFsBackend};
use servers::librarian::scrub::ScrubSettings;

use crate::support::{client, content, error_code, Options, TestServer, PASSWORD, USER};

/// Polls `GET /scrub` until `done` holds (the task runs on its own; a bound, not a timing).
async fn wait_for_scrub(
    server: &TestServer,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..600 {
        let report = server.get_json("/scrub").await;
        if done(&report) {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scrub did not get there within 30 s");
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = crate::support::get_text(&server.url("/metrics")).await;
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name || key == format!("librarian_{name}")).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_a_damaged_blob_while_serving() {
    let settings = ScrubSettings {
        bytes_per_sec: 64 << 20,
        period: Duration::from_secs(3600),
        idle_check: Duration::from_millis(20),
    };
    let server = TestServer::start(Options {
        scrub: Some(settings),
        ..Options::default()
    })
    .await;
    let mut files = Vec::new();
    for i in 0..3u64 {
        files.push(
            server
                .upload("scrub", &format!("f{i}.bin"), content(100_000, i))
                .await,
        );
    }

    // The first pass, over the empty store at start, is done; the next is due an hour after
    // it started. A clean store: a complete pass that found nothing.
    wait_for_scrub(&server, |r| r["last_complete"]["pass"] == 1).await;
    server.clock.advance(Duration::from_secs(3601));
    let report = wait_for_scrub(&server, |r| r["last_complete"]["pass"] == 2).await;
    assert_eq!(report["last_complete"]["blobs"], 3);
    assert_eq!(report["last_complete"]["bytes"], 300_000);
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(report["rate_bytes_per_sec"], 64 << 20);
    assert_eq!(metric(&server, "scrub_corrupt_blobs").await, 0.0);
    assert!(metric(&server, "scrub_checked_bytes_total").await >= 300_000.0);

    // One bit flipped behind the server's back; the next pass is due an hour later.
    let damaged = &files[1];
    let hash: Blake3Hash = damaged["blake3"].as_str().unwrap().parse().unwrap();
    let blobs = LocalFsBackend::open(server.dir.path()).unwrap();
    corrupt_blob(&blobs, &hash, 4_000);
    server.clock.advance(Duration::from_secs(3601));
    let report = wait_for_scrub(&server, |r| r["findings"].as_array().unwrap().len() == 1).await;
    let finding = &report["findings"][0];
    assert_eq!(finding["blake3"], hash.to_hex());
    assert_eq!(finding["problem"], "corrupt");
    assert_eq!(finding["size"], 100_000);
    assert_eq!(finding["files"], serde_json::json!([damaged["id"]]));
    assert_eq!(metric(&server, "scrub_corrupt_blobs").await, 1.0);

    // Its downloads, whole, ranged, by blob and HEAD, answer 500 `corrupt`; the others are
    // served as before.
    let url = |file: &serde_json::Value| {
        server.url(&format!(
            "/{}/{}",
            file["id"],
            file["filename"].as_str().unwrap()
        ))
    };
    let response = client().get(url(damaged)).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(error_code(response).await, "corrupt");
    let ranged = client()
        .get(url(damaged))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 500);
    let by_blob = client()
        .get(server.url(&format!("/blobs/{}", hash.to_hex())))
        .send()
        .await
        .unwrap();
    assert_eq!(by_blob.status(), 500);
    let head = client().head(url(damaged)).send().await.unwrap();
    assert_eq!(head.status(), 500);
    let good = client().get(url(&files[2])).send().await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.bytes().await.unwrap().to_vec(), content(100_000, 2));

    // The change feed tells it once, under the scrub's actor.
    let changes: serde_json::Value = client()
        .get(server.url("/changes?after=0&limit=100"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let damaged_events: Vec<&serde_json::Value> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "blob.damaged")
        .collect();
    assert_eq!(damaged_events.len(), 1, "{changes}");
    assert_eq!(damaged_events[0]["blake3"], hash.to_hex());
    assert_eq!(damaged_events[0]["problem"], "corrupt");
    assert_eq!(damaged_events[0]["actor"], "scrub");
}
