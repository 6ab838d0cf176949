//! The feed's HTTP contract over a real `engine::ChangeLog` (in memory) and, for the long poll
//! and the event stream, a real server on a loopback socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::test_source::LogSource;
use super::*;
use crate::common::error::Query;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
    query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn page(
    source: &Arc<LogSource>,
    query: &[(&str, &str)],
) -> Result<serde_json::Value, ApiError> {
    let response = changes(Arc::clone(source), &pairs(query), &HeaderMap::new()).await?;
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Ok(serde_json::from_slice(&body).unwrap())
}

fn revisions(page: &serde_json::Value) -> Vec<u64> {
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn bad_queries_are_refused_with_their_reason() {
    let source = LogSource::new();
    source.record("file.created", "a");
    for (query, code) in [
        (vec![("colour", "red")], "bad_query"),
        (vec![("kind", "file.renamed")], "bad_query"),
        (vec![("after", "ten")], "bad_query"),
        (vec![("after", "-1")], "bad_query"),
        (vec![("limit", "0")], "bad_query"),
        (vec![("limit", "1001")], "bad_query"),
        (vec![("wait", "61")], "bad_query"),
        (vec![("after", "1"), ("after", "0")], "bad_query"),
        (vec![("after", "2")], "beyond_head"),
    ] {
        let error = page(&source, &query).await.unwrap_err();
        assert_eq!(error.code(), code, "{query:?}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{query:?}");
    }
}

#[tokio::test]
async fn filtered_pages_continue_from_next_and_pruned_history_is_gone() {
    let source = LogSource::new();
    for i in 0..30 {
        let bucket = if i % 3 == 0 { "a" } else { "b" };
        source.record("file.created", bucket);
    }
    source.record("file.deleted", "a");
    let first = page(&source, &[("bucket", "a"), ("limit", "4")])
        .await
        .unwrap();
    assert_eq!(revisions(&first), vec![1, 4, 7, 10]);
    assert_eq!(first["next"], 10);
    assert_eq!(first["head"], 31);
    let rest = page(
        &source,
        &[("bucket", "a"), ("after", "10"), ("limit", "100")],
    )
    .await
    .unwrap();
    assert_eq!(revisions(&rest), vec![13, 16, 19, 22, 25, 28, 31]);
    assert_eq!(rest["next"], 31);
    let deletes = page(&source, &[("kind", "file.deleted")]).await.unwrap();
    assert_eq!(revisions(&deletes), vec![31]);

    source.log.prune_through(20).unwrap();
    let error = page(&source, &[("after", "5")]).await.unwrap_err();
    assert_eq!(error.status(), StatusCode::GONE);
    assert_eq!(error.code(), "compacted");
    let kept = page(&source, &[("after", "20"), ("limit", "1")])
        .await
        .unwrap();
    assert_eq!(revisions(&kept), vec![21]);
}

async fn handler(
    State(source): State<Arc<LogSource>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    changes(source, &pairs, &headers).await
}

async fn serve(source: Arc<LogSource>) -> std::net::SocketAddr {
    let router = Router::new()
        .route("/changes", get(handler))
        .with_state(source);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_a_matching_event_is_durable() {
    let source = LogSource::new();
    source.record("file.created", "a");
    let address = serve(Arc::clone(&source)).await;
    let writer = Arc::clone(&source);
    let writes = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        writer.record("file.created", "b"); // not matching: the poll goes on waiting
        std::thread::sleep(Duration::from_millis(200));
        writer.record("file.created", "a")
    });
    let started = Instant::now();
    let answer: serde_json::Value =
        reqwest::get(format!("http://{address}/changes?after=1&wait=20&bucket=a"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(writes.join().unwrap(), 3);
    assert_eq!(revisions(&answer), vec![3]);
    assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");

    // Nothing arrives: the poll ends at its wait with an empty page at the head.
    let started = Instant::now();
    let answer: serde_json::Value =
        reqwest::get(format!("http://{address}/changes?after=3&wait=1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(revisions(&answer), Vec::<u64>::new());
    assert_eq!(answer["next"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_resumes_after_last_event_id_and_follows_new_events() {
    let source = LogSource::new();
    for bucket in ["a", "b", "a", "a"] {
        source.record("file.created", bucket);
    }
    let address = serve(Arc::clone(&source)).await;
    let mut response = reqwest::Client::new()
        .get(format!("http://{address}/changes?bucket=a"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let writer = Arc::clone(&source);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        writer.record("file.deleted", "a")
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("id: 5\n") && Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, vec!["3", "4", "5"], "{text}");
    assert!(text.contains("event: file.deleted\n"), "{text}");

    // A stream from a bad starting point is refused before it starts.
    let refused = reqwest::Client::new()
        .get(format!("http://{address}/changes"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "99")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}
