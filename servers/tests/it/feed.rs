//! The librarian's change feed over real sockets: X-Revision on writes, history, the long
//! poll's wake-up, `curl -N` on the event stream, and a callback to a loopback receiver.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    client, content, error_code, get_text, wait_for_zero_gauge, Options, TestServer, PASSWORD, USER,
};

fn revision_header(response: &reqwest::Response) -> u64 {
    response.headers()["x-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn kinds(page: &Value) -> Vec<String> {
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn writes_answer_their_revision_and_history_lists_them() {
    let server = TestServer::start(Options::default()).await;
    let c = client();
    let response = c
        .post(server.url("/buckets/feed/files?filename=a.txt"))
        .basic_auth(USER, Some(PASSWORD))
        .body(content(100, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(revision_header(&response), 1);
    let file: Value = response.json().await.unwrap();
    assert_eq!(file["revision"], 1);
    let id = file["id"].as_u64().unwrap();

    let response = c
        .put(server.url("/buckets/feed"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"quota_bytes": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(revision_header(&response), 2);
    assert_eq!(response.json::<Value>().await.unwrap()["revision"], 2);

    let response = c
        .patch(server.url(&format!("/files/{id}")))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"expires": 1_900_000_000, "restricted": true}))
        .send()
        .await
        .unwrap();
    // Two fields changed: two events, and the answer names the last.
    assert_eq!(revision_header(&response), 4);
    let response = c
        .delete(server.url(&format!("/files/{id}/content")))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-on-behalf-of", "alice")
        .send()
        .await
        .unwrap();
    // Not a trusted caller: naming someone else is refused, and nothing is recorded.
    assert_eq!(response.status(), 403);
    let response = c
        .delete(server.url(&format!("/files/{id}")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(revision_header(&response), 5);

    let history = server.get_json(&format!("/files/{id}/history")).await;
    assert_eq!(
        kinds(&history),
        [
            "file.created",
            "file.expiry_changed",
            "file.restricted_changed",
            "file.deleted"
        ]
    );
    assert_eq!(history["next"], 5);
    assert_eq!(history["changes"][1]["after"], 1_900_000_000_000i64);
    let page = server
        .get_json("/buckets/feed/history?after=1&limit=1")
        .await;
    assert_eq!(kinds(&page), ["bucket.quota_set"]);
    assert_eq!(page["next"], 2);
    let mine = server.get_json(&format!("/persons/{USER}/history")).await;
    assert_eq!(mine["changes"].as_array().unwrap().len(), 5);
    assert!(mine["changes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["actor"] == USER));

    let created = server.get_json("/changes?kind=file.created").await;
    assert_eq!(kinds(&created), ["file.created"]);
    assert_eq!(
        (created["next"].as_u64(), created["head"].as_u64()),
        (Some(5), Some(5))
    );
    let of_file = server
        .get_json(&format!("/changes?file={id}&after=3"))
        .await;
    assert_eq!(kinds(&of_file), ["file.restricted_changed", "file.deleted"]);

    for (query, status, code) in [
        ("/changes?kind=file.renamed", 400, "bad_query"),
        ("/changes?colour=red", 400, "bad_query"),
        ("/changes?after=99", 400, "beyond_head"),
        ("/changes?wait=61", 400, "bad_query"),
        ("/files/1/history?limit=0", 400, "bad_query"),
    ] {
        let response = c
            .get(server.url(query))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{query}");
        assert_eq!(error_code(response).await, code, "{query}");
    }
    // The feed is for writers only.
    let anonymous = c.get(server.url("/changes")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_the_next_write() {
    let server = Arc::new(TestServer::start(Options::default()).await);
    server.upload("poll", "first", content(10, 1)).await;
    let poller = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let started = Instant::now();
            let page = server.get_json("/changes?after=1&wait=30").await;
            (page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poller.is_finished(), "the poll answered before any write");
    let written = Instant::now();
    server.upload("poll", "second", content(10, 2)).await;
    let (page, waited) = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the poll woke up")
        .unwrap();
    assert_eq!(kinds(&page), ["file.created"]);
    assert_eq!(page["changes"][0]["revision"], 2);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(written.elapsed() < Duration::from_secs(5));
    // Nothing new: an empty page once the time is up.
    let idle = server.get_json("/changes?after=2&wait=1").await;
    assert!(idle["changes"].as_array().unwrap().is_empty());
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_the_event_stream() {
    let server = TestServer::start(Options::default()).await;
    server.upload("sse", "before", content(10, 1)).await;
    let mut curl = Command::new("curl")
        .args(["-N", "-s", "--max-time", "20", "-u"])
        .arg(format!("{USER}:{PASSWORD}"))
        .args(["-H", "Accept: text/event-stream"])
        .arg(server.url("/changes?after=0&bucket=sse"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = curl.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let done = line.starts_with("id: 3");
                lines.lock().unwrap().push(line);
                if done {
                    return;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.upload("other", "elsewhere", content(10, 2)).await;
    server.upload("sse", "after", content(10, 3)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    curl.kill().unwrap();
    curl.wait().unwrap();
    let lines = lines.lock().unwrap().clone();
    let ids: Vec<&String> = lines.iter().filter(|l| l.starts_with("id: ")).collect();
    assert_eq!(ids, ["id: 1", "id: 3"], "{lines:?}");
    assert!(
        lines.contains(&"event: file.created".to_owned()),
        "{lines:?}"
    );
    let data = lines.iter().find(|l| l.starts_with("data: ")).unwrap();
    let event: Value = serde_json::from_str(&data["data: ".len()..]).unwrap();
    assert_eq!(
        (event["bucket"].as_str(), event["filename"].as_str()),
        (Some("sse"), Some("before"))
    );
    server.stop().await;
}

/// A callback receiver on loopback that records what it is sent.
async fn start_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = {
        let received = Arc::clone(&received);
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let received = Arc::clone(&received);
                async move {
                    received.lock().unwrap().push(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_call_back_and_report_their_lag() {
    let (address, received) = start_receiver().await;
    let options = Options {
        callback_hosts: vec![address.to_string()],
        ..Options::default()
    };
    let server = TestServer::start(options).await;
    let c = client();
    let subscribe = |callback: String| {
        c.post(server.url("/subscriptions"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&json!({
                "filter": {"kind": "file.deleted"},
                "callback": callback,
                "expires": 4_000_000_000i64,
            }))
            .send()
    };
    let refused = subscribe("http://127.0.0.2:9/hook".into()).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(error_code(refused).await, "bad_callback");
    let response = subscribe(format!("http://{address}/hook")).await.unwrap();
    assert_eq!(response.status(), 201);
    let subscription: Value = response.json().await.unwrap();
    let id = subscription["id"].as_u64().unwrap();
    assert_eq!(subscription["created_by"], USER);

    let file = server.upload("cb", "gone", content(10, 1)).await;
    let response = c
        .delete(server.url(&format!("/files/{}", file["id"])))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let deleted_at = revision_header(&response);
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = received.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["subscription"], id);
    assert_eq!(kinds(&delivered[0]), ["file.deleted"]);
    assert_eq!(delivered[0]["changes"][0]["revision"], deleted_at);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = server.get_json(&format!("/subscriptions/{id}")).await;
        if view["acked"] == deleted_at || Instant::now() > deadline {
            assert_eq!(view["acked"], deleted_at);
            assert_eq!(view["lag"], 0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = get_text(&server.url("/metrics")).await;
    assert!(
        metrics.contains(&format!("feed_subscription_lag{{subscription=\"{id}\"}} 0")),
        "{metrics}"
    );
    // The change log's indexer writes the history keys of every event above in its own
    // batches: the gauge of what it has not reached comes back to 0.
    wait_for_zero_gauge(&server.url("/metrics"), "librarian_feed_history_unindexed").await;
    let response = c
        .delete(server.url(&format!("/subscriptions/{id}")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = c
        .get(server.url(&format!("/subscriptions/{id}")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    server.stop().await;
}
