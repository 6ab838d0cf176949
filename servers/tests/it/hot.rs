//! Small downloads answered from the store's hot-file cache, over real sockets: once a file
//! is deleted, cut, expired or made restricted, no answer may come from a stale copy.

use std::time::Duration;

use blobstore::FileId;

use crate::support::{client, content, Options, TestServer, PASSWORD, START_SECS, USER};

fn auth(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.basic_auth(USER, Some(PASSWORD))
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

/// Uploads a small file, downloads it once (which fills the cache) and returns its id and
/// download URL.
async fn cached_upload(server: &TestServer, name: &str, query: &str) -> (FileId, String) {
    let response =
        auth(client().post(server.url(&format!("/buckets/hot/files?filename={name}{query}"))))
            .body(content(4096, name.len() as u64))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 201);
    let file: serde_json::Value = response.json().await.unwrap();
    let id = FileId(file["id"].as_u64().unwrap());
    let url = server.url(file["url"].as_str().unwrap());
    let response = get(&url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        content(4096, name.len() as u64)
    );
    assert!(server.state.store().cached_file(id).is_some());
    (id, url)
}

#[tokio::test]
async fn cached_downloads_match_and_are_counted() {
    let server = TestServer::start(Options::default()).await;
    let (id, url) = cached_upload(&server, "counted.bin", "").await;
    // From the cache: the same bytes and headers as the first answer.
    for _ in 0..3 {
        let response = get(&url).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-length"], "4096");
        assert_eq!(response.headers()["accept-ranges"], "bytes");
        let etag = response.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(response.bytes().await.unwrap().as_ref(), content(4096, 11));
        // Conditionals and ranges are answered from the cache too.
        let response = client()
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304);
        let response = client()
            .get(&url)
            .header("range", "bytes=4000-")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(response.headers()["content-range"], "bytes 4000-4095/4096");
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            &content(4096, 11)[4000..]
        );
    }
    // HEAD: the headers without the body.
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "4096");
    assert!(head.bytes().await.unwrap().is_empty());
    // A wrong filename is still 404, from the cache as from the store.
    let wrong = server.url(&format!("/{}/other.bin", id.0));
    assert_eq!(get(&wrong).await.status(), 404);
    // Answers from memory are in the metrics like any other.
    let metrics = server.state.metrics();
    assert_eq!(metrics.requests("/{id}/{filename}", "GET", 200), 4);
    assert_eq!(metrics.requests("/{id}/{filename}", "GET", 304), 3);
    assert_eq!(metrics.requests("/{id}/{filename}", "GET", 206), 3);
    assert_eq!(metrics.requests("/{id}/{filename}", "HEAD", 200), 1);
    // Whole downloads count (the first one and three more); 304s and ranges do not.
    let today = blobstore::Timestamp::from_unix_millis(START_SECS * 1000).day();
    assert_eq!(server.state.store().downloads(id, today).unwrap(), 4);
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_file_is_not_served_from_the_cache() {
    let server = TestServer::start(Options::default()).await;
    let (id, url) = cached_upload(&server, "deleted.bin", "").await;
    let response = auth(client().delete(server.url(&format!("/files/{}", id.0))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(server.state.store().cached_file(id).is_none());
    assert_eq!(get(&url).await.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_file_whose_content_was_deleted_is_not_served_from_the_cache() {
    let server = TestServer::start(Options::default()).await;
    let (id, url) = cached_upload(&server, "cut.bin", "").await;
    let response = auth(client().delete(server.url(&format!("/files/{}/content", id.0))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(get(&url).await.status(), 410);
    // HEAD takes the same path.
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 410);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_file_is_not_served_from_the_cache() {
    let server = TestServer::start(Options::default()).await;
    let expires = START_SECS + 60;
    let (id, url) = cached_upload(&server, "soon.bin", &format!("&expires={expires}")).await;
    server.clock.advance(Duration::from_secs(59));
    assert_eq!(get(&url).await.status(), 200);
    server.clock.advance(Duration::from_secs(1));
    // Still in the cache, and refused: the expiry is checked on every answer.
    assert!(server.state.store().cached_file(id).is_some());
    assert_eq!(get(&url).await.status(), 410);
    // GC cuts the link after the expiry grace and drops the cached copy.
    server.clock.advance(blobstore::DEFAULT_EXPIRY_GRACE);
    let store = server.state.store().clone();
    let report = tokio::task::spawn_blocking(move || store.gc(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.expired_files, 1);
    assert!(server.state.store().cached_file(id).is_none());
    assert_eq!(get(&url).await.status(), 410);
    server.stop().await;
}

#[tokio::test]
async fn a_file_made_restricted_is_not_served_from_the_cache_without_its_token() {
    let server = TestServer::start(Options::default()).await;
    let (id, url) = cached_upload(&server, "private.bin", "").await;
    let store = server.state.store().clone();
    tokio::task::spawn_blocking(move || store.set_restricted(id, true, "tester"))
        .await
        .unwrap()
        .unwrap();
    let response = get(&url).await;
    assert_eq!(response.status(), 404);
    // With its token it is served (and cached again), still only with the token.
    let token: serde_json::Value =
        auth(client().post(server.url(&format!("/files/{}/token?ttl=300", id.0))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let with_token = server.url(token["url"].as_str().unwrap());
    let response = get(&with_token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private, max-age=0");
    assert!(server.state.store().cached_file(id).is_some());
    assert_eq!(get(&url).await.status(), 404);
    // Past the token's lifetime: refused, though the file is cached.
    server.clock.advance(Duration::from_secs(301));
    assert_eq!(get(&with_token).await.status(), 404);
    server.stop().await;
}

/// Readers keep downloading while a writer deletes: once the DELETE has been answered,
/// every later GET is a 404.
#[tokio::test]
async fn no_download_succeeds_after_the_delete_was_answered() {
    let server = TestServer::start(Options::default()).await;
    for round in 0..10 {
        let (id, url) = cached_upload(&server, &format!("race-{round}.bin"), "").await;
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let _ = client().get(&url).send().await;
                    }
                })
            })
            .collect();
        let response = auth(client().delete(server.url(&format!("/files/{}", id.0))))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        for _ in 0..5 {
            assert_eq!(
                get(&url).await.status(),
                404,
                "file {id} served after its delete"
            );
        }
        for reader in readers {
            reader.await.unwrap();
        }
        assert_eq!(get(&url).await.status(), 404);
    }
    server.stop().await;
}
