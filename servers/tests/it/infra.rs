//! The shared HTTP infrastructure over real sockets: limits, timeouts, access, overload and
//! graceful shutdown, on a small router made for the purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use servers::common::access::{self, hash_password, AccessPolicy};
use servers::common::metrics::{HttpMetrics, Tracker};
use servers::common::{finish, serve, Credential, Limits, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics: Arc<HttpMetrics>,
    gate: Arc<Gate>,
}

/// Holds `/slow` requests inside their handler until the test lets them go, so that "in
/// flight" is a fact the test waits for, not a sleep it hopes is long enough.
#[derive(Debug)]
struct Gate {
    /// One permit per request that entered the handler.
    entered: tokio::sync::Semaphore,
    /// One permit per request allowed to answer.
    release: tokio::sync::Semaphore,
}

impl Gate {
    /// Waits until a `/slow` request is inside its handler (at most a minute).
    async fn wait_entered(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.entered.acquire())
            .await
            .expect("the slow request reached its handler within a minute")
            .unwrap()
            .forget();
    }

    fn release_one(&self) {
        self.release.add_permits(1);
    }
}

async fn start(limits: Limits) -> Running {
    let config = ServerConfig {
        credentials: vec![Credential {
            user: "writer".into(),
            hash: hash_password("pw"),
        }],
        limits: limits.clone(),
        ..ServerConfig::default()
    };
    let policy = Arc::new(AccessPolicy::from_config(&config, "test").unwrap());
    let metrics = Arc::new(HttpMetrics::new("test"));
    let tracker = Tracker::new(Arc::clone(&metrics), limits.max_concurrency);
    let writes = Router::new()
        .route(
            "/write",
            post(|body: String| async move { format!("got {}", body.len()) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            policy,
            access::require_writer,
        ));
    let metrics_for_route = Arc::clone(&metrics);
    let gate = Arc::new(Gate {
        entered: tokio::sync::Semaphore::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let gate_for_route = Arc::clone(&gate);
    let app = Router::new()
        .route(
            "/slow",
            get(move || async move {
                gate_for_route.entered.add_permits(1);
                gate_for_route.release.acquire().await.unwrap().forget();
                "slow done"
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move { metrics_for_route.encode() }),
        )
        .merge(writes);
    let app = finish(app, tracker);
    let listener = serve::bind("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::serve(listener, app, limits, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
        metrics,
        gate,
    }
}

fn url(running: &Running, path: &str) -> String {
    format!("http://{}{}", running.addr, path)
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let response = client.get(url(&server, "/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_route");
    let response = client.delete(url(&server, "/slow")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn writers_need_credentials() {
    let server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let response = client
        .post(url(&server, "/write"))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let response = client
        .post(url(&server, "/write"))
        .basic_auth("writer", Some("wrong"))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .post(url(&server, "/write"))
        .basic_auth("writer", Some("pw"))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "got 3");
}

#[tokio::test]
async fn dev_mode_refuses_public_addresses() {
    let error = serve::bind("0.0.0.0:0".parse().unwrap(), true)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn overload_answers_503_with_retry_after_and_health_stays_up() {
    let server = start(Limits {
        max_concurrency: 1,
        ..Limits::default()
    })
    .await;
    let client = reqwest::Client::new();
    let slow = tokio::spawn({
        let request = client.get(url(&server, "/slow"));
        async move { request.send().await.unwrap().status() }
    });
    // Wait until the slow request is inside its handler: it holds the only permit until the
    // test releases it.
    server.gate.wait_entered().await;
    assert!(
        server
            .metrics
            .encode()
            .contains("test_http_requests_in_flight 1"),
        "the slow request is counted in flight"
    );
    let response = client.get(url(&server, "/slow")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    let health = client.get(url(&server, "/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        !slow.is_finished(),
        "the slow request answered before it was released"
    );
    server.gate.release_one();
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(server.metrics.requests("/slow", "GET", 503), 1);
    assert_eq!(server.metrics.requests("/slow", "GET", 200), 1);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let response = client
        .get(url(&server, "/health"))
        .header("x-big", "a".repeat(64 << 10))
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 431),
        // hyper may close the connection before the client finished writing.
        Err(error) => assert!(
            error.is_request() || error.is_connect() || error.is_body(),
            "{error}"
        ),
    }
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = start(Limits {
        idle_timeout_secs: 1,
        header_read_timeout_secs: 30,
        ..Limits::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Half a request line, then silence.
    stream.write_all(b"GET /health HT").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let read = read.expect("the server kept an idle connection open");
    assert!(read.is_err() || buf.is_empty(), "unexpected answer {buf:?}");
}

#[tokio::test]
async fn metrics_count_requests_and_bytes() {
    let server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client
            .post(url(&server, "/write"))
            .basic_auth("writer", Some("pw"))
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let text = crate::support::get_text(&url(&server, "/metrics")).await;
    assert!(
        text.contains(r#"test_http_requests_total{route="/write",method="POST",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"test_http_request_body_bytes_total{route="/write"} 30"#),
        "{text}"
    );
    assert!(
        text.contains("test_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = start(Limits::default()).await;
    let client = reqwest::Client::new();
    let slow = tokio::spawn({
        let request = client.get(url(&server, "/slow"));
        async move { request.send().await.unwrap().text().await.unwrap() }
    });
    server.gate.wait_entered().await;
    assert!(
        server
            .metrics
            .encode()
            .contains("test_http_requests_in_flight 1"),
        "the slow request is counted in flight"
    );
    server.stop.take().unwrap().send(()).unwrap();
    // The shutdown waits for the request it holds: neither ends while the handler does not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !slow.is_finished(),
        "the in-flight request was cut or answered early"
    );
    assert!(
        !server.task.is_finished(),
        "the server stopped with a request in flight"
    );
    server.gate.release_one();
    assert_eq!(slow.await.unwrap(), "slow done");
    server.task.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting after shutdown"
    );
}
