//! `Idempotency-Key` on `POST /buckets/{bucket}/files` over a real socket: a retried upload
//! answers the first one's record (200) without a second file; other content is 422; a
//! malformed key is 400 before the body is read.

use crate::support::{client, content, error_code, Options, TestServer, PASSWORD, USER};

async fn post(server: &TestServer, name: &str, key: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(server.url(&format!("/buckets/retry/files?filename={name}")))
        .basic_auth(USER, Some(PASSWORD))
        .header("idempotency-key", key)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn idempotency_keys_over_a_socket() {
    let server = TestServer::start(Options::default()).await;
    let body = content(50_000, 3);
    let first = post(&server, "a.deb", "upload-1", body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = post(&server, "a.deb", "upload-1", body.clone()).await;
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(server.get_json("/buckets/retry").await["files"], 1);

    let other = post(&server, "a.deb", "upload-1", content(10, 4)).await;
    assert_eq!(other.status(), 422);
    assert_eq!(error_code(other).await, "idempotency_conflict");
    let fresh = post(&server, "b.deb", "upload-2", content(10, 4)).await;
    assert_eq!(fresh.status(), 201);

    for bad in [String::new(), "k".repeat(256)] {
        let refused = post(&server, "c.deb", &bad, content(10, 5)).await;
        assert_eq!(refused.status(), 400, "key of {} bytes", bad.len());
        assert_eq!(error_code(refused).await, "bad_idempotency_key");
    }
    assert_eq!(
        post(&server, "c.deb", &"k".repeat(255), content(10, 5))
            .await
            .status(),
        201
    );
    assert_eq!(server.get_json("/buckets/retry").await["files"], 3);
    server.stop().await;
}
