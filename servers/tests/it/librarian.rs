// Test-only, long on purpose: the librarian's end-to-end scenarios share one server setup and
// its socket and curl helpers.
//! The librarian end to end over real sockets, with reqwest and curl.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    client, content, error_code, Options, TestServer, PASSWORD, START_SECS, USER,
};

fn curl() -> Command {
    let mut command = Command::new("curl");
    command.args(["--silent", "--show-error"]);
    command
}

#[tokio::test]
async fn upload_then_download_compare() {
    let server = TestServer::start(Options::default()).await;
    let body = content(3 << 20, 1);
    // A streamed (chunked) upload with an announced SHA-256.
    let sha = sha2::Sha256::digest(&body);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let response = client()
        .post(server.url("/buckets/debs/files?filename=big%20file.deb"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/vnd.debian.binary-package")
        .header(
            "content-digest",
            format!(
                "sha-256=:{}:",
                base64::engine::general_purpose::STANDARD.encode(sha)
            ),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let file: serde_json::Value = response.json().await.unwrap();
    assert_eq!(file["size"], 3 << 20);
    assert_eq!(file["filename"], "big file.deb");
    assert_eq!(file["sha256"], hex::encode(sha));
    assert_eq!(file["blake3"], blake3::hash(&body).to_hex().as_str());
    assert_eq!(file["md5"].as_str().map(str::len), Some(32));
    assert_eq!(location, format!("/{}/big%20file.deb", file["id"]));
    assert_eq!(file["url"], location);

    let response = client().get(server.url(&location)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-type"],
        "application/vnd.debian.binary-package"
    );
    assert_eq!(headers["content-length"], (3 << 20).to_string().as_str());
    assert_eq!(
        headers["etag"],
        format!("\"{}\"", file["blake3"].as_str().unwrap()).as_str()
    );
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(headers.contains_key("last-modified"));
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());

    // HEAD: the same headers, no body.
    let response = client().head(server.url(&location)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        (3 << 20).to_string().as_str()
    );
    assert!(response.bytes().await.unwrap().is_empty());

    // By hash.
    let response = client()
        .get(server.url(&format!("/blobs/{}", file["blake3"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 3 << 20);

    // Metadata.
    let response = client()
        .get(server.url(&format!("/files/{}", file["id"])))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let meta: serde_json::Value = response.json().await.unwrap();
    assert_eq!(meta["content"], "present");
    assert_eq!(meta["bucket"], "debs");
    server.stop().await;
}

#[tokio::test]
async fn small_and_empty_files() {
    let server = TestServer::start(Options::default()).await;
    for size in [0usize, 1, 4096, 16 * 1024, 16 * 1024 + 1] {
        let body = content(size, size as u64);
        let file = server
            .upload("small", &format!("f{size}"), body.clone())
            .await;
        let response = client()
            .get(server.url(file["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "size {size}");
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            body.as_slice(),
            "size {size}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn dedup_is_visible_in_statistics() {
    let server = TestServer::start(Options::default()).await;
    let body = content(100_000, 7);
    let a = server.upload("ppa", "a.deb", body.clone()).await;
    let b = server.upload("ppa", "b.deb", body.clone()).await;
    server.upload("other", "c.deb", body.clone()).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["blake3"], b["blake3"]);
    let stats: serde_json::Value = server.get_json("/buckets/ppa").await;
    assert_eq!(stats["files"], 2);
    assert_eq!(stats["logical_bytes"], 200_000);
    assert_eq!(stats["unique_bytes"], 100_000);
    let summary: serde_json::Value = server.get_json("/stats").await;
    assert_eq!(summary["blobs"], 1);
    assert_eq!(summary["stored_bytes"], 100_000);
    assert_eq!(summary["logical_bytes"], 300_000);
    assert_eq!(summary["dedup_ratio"], 3.0);
    // Search by SHA-256 finds all three.
    let sha = hex::encode(sha2::Sha256::digest(&body));
    let found: serde_json::Value = server.get_json(&format!("/search?sha256={sha}")).await;
    assert_eq!(found["files"].as_array().unwrap().len(), 3);
    let response = client()
        .get(server.url("/search?sha256=zz"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn bucket_listing_pages() {
    let server = TestServer::start(Options::default()).await;
    let mut ids = BTreeSet::new();
    for i in 0..7 {
        let file = server
            .upload("logs", &format!("log{i}"), content(10, i))
            .await;
        ids.insert(file["id"].as_u64().unwrap());
    }
    let mut seen = BTreeSet::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = server.url("/buckets/logs/files?limit=3");
        if let Some(cursor) = &after {
            url.push_str(&format!("&after={cursor}"));
        }
        let page: serde_json::Value = client()
            .get(url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for file in page["files"].as_array().unwrap() {
            assert!(seen.insert(file["id"].as_u64().unwrap()));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    let response = client()
        .get(server.url("/buckets/logs/files?limit=0"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn ranges_as_apt_uses_them_and_304s() {
    let server = TestServer::start(Options::default()).await;
    let body = content(1 << 20, 3);
    let file = server.upload("apt", "pool.deb", body.clone()).await;
    let url = server.url(file["url"].as_str().unwrap());
    let etag = format!("\"{}\"", file["blake3"].as_str().unwrap());
    let first = client().get(&url).send().await.unwrap();
    let last_modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    drop(first);

    // apt resumes a partial download with Range and If-Range (a date, or the ETag).
    for validator in [etag.as_str(), last_modified.as_str()] {
        let response = client()
            .get(&url)
            .header("range", "bytes=1000-")
            .header("if-range", validator)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes 1000-{}/{}", body.len() - 1, body.len()).as_str()
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), &body[1000..]);
    }
    // A changed validator: the whole content.
    let response = client()
        .get(&url)
        .header("range", "bytes=1000-")
        .header("if-range", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), body.len());
    // A bounded range and a suffix range.
    let response = client()
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap().as_ref(), &body[10..20]);
    let response = client()
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        &body[body.len() - 5..]
    );
    // Past the end: 416.
    let response = client()
        .get(&url)
        .header("range", format!("bytes={}-", body.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 416);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{}", body.len()).as_str()
    );

    // 304s.
    let response = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], etag.as_str());
    let response = client()
        .get(&url)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    let response = client()
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn curl_uploads_resumes_and_checks() {
    let server = TestServer::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let body = content(2 << 20, 11);
    let source = dir.path().join("source.bin");
    std::fs::write(&source, &body).unwrap();
    let base = server.url("");
    let output = tokio::task::spawn_blocking(move || {
        curl()
            .args([
                "--fail",
                "-u",
                &format!("{USER}:{PASSWORD}"),
                "--data-binary",
            ])
            .arg(format!("@{}", source.display()))
            .args(["-H", "Content-Type: application/octet-stream"])
            .arg(format!("{base}/buckets/curl/files?filename=source.bin"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let url = server.url(file["url"].as_str().unwrap());

    // A partial download resumed with `curl -C -`.
    let target = dir.path().join("target.bin");
    std::fs::write(&target, &body[..700_000]).unwrap();
    let (t, u) = (target.clone(), url.clone());
    let output = tokio::task::spawn_blocking(move || {
        curl()
            .args(["--fail", "-C", "-", "-o"])
            .arg(&t)
            .arg(&u)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), body);

    // curl -I and a conditional request through curl.
    let u = url.clone();
    let etag = format!("\"{}\"", file["blake3"].as_str().unwrap());
    let output = tokio::task::spawn_blocking(move || {
        curl()
            .args(["-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("If-None-Match: {etag}"))
            .arg(&u)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "304");
    let u = url.clone();
    let output = tokio::task::spawn_blocking(move || curl().arg("-I").arg(&u).output().unwrap())
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );

    // Without credentials curl gets 401 and a JSON error.
    let base = server.url("");
    let output = tokio::task::spawn_blocking(move || {
        curl()
            .args(["-w", "\n%{http_code}", "--data-binary", "x"])
            .arg(format!("{base}/buckets/curl/files?filename=x"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(text.ends_with("\n401"), "{text}");
    assert!(text.contains("\"unauthorized\""), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn quota_refuses_uploads() {
    let server = TestServer::start(Options::default()).await;
    let response = client()
        .put(server.url("/buckets/small"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&serde_json::json!({"quota_bytes": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stats: serde_json::Value = response.json().await.unwrap();
    assert_eq!(stats["quota_bytes"], 100);
    server.upload("small", "a", content(60, 1)).await;
    // Known length: refused before the body is read.
    let response = client()
        .post(server.url("/buckets/small/files?filename=b"))
        .basic_auth(USER, Some(PASSWORD))
        .body(content(60, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "quota_exceeded");
    // Unknown length (chunked): refused at commit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(content(30, 3)), Ok(content(30, 4))];
    let response = client()
        .post(server.url("/buckets/small/files?filename=c"))
        .basic_auth(USER, Some(PASSWORD))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let stats = server
        .state
        .store()
        .bucket_stats(&blobstore::BucketName::new("small").unwrap())
        .unwrap();
    assert_eq!(stats.files, 1);
    assert_eq!(stats.logical_bytes, 60);
    // Malformed quota JSON.
    let response = client()
        .put(server.url("/buckets/small"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .body("{\"quota_bytes\": \"lots\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "bad_json");
    server.stop().await;
}

#[tokio::test]
async fn deleted_expired_wrong_filename_and_restricted() {
    let server = TestServer::start(Options::default()).await;
    let c = client();
    let auth = |r: reqwest::RequestBuilder| r.basic_auth(USER, Some(PASSWORD));

    // Wrong filename.
    let file = server.upload("b", "right.txt", content(10, 1)).await;
    let id = file["id"].as_u64().unwrap();
    let response = c
        .get(server.url(&format!("/{id}/wrong.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
    // Malformed id and hash.
    let response = c.get(server.url("/12x/right.txt")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "bad_id");
    let response = c.get(server.url("/blobs/abc")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let response = c.get(server.url("/99999/none")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Content deleted, record kept: 410; then the file deleted: 404.
    let response = auth(c.delete(server.url(&format!("/files/{id}/content"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = c
        .get(server.url(&format!("/{id}/right.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    let meta: serde_json::Value = auth(c.get(server.url(&format!("/files/{id}"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["content"], "deleted");
    let response = auth(c.delete(server.url(&format!("/files/{id}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = c
        .get(server.url(&format!("/{id}/right.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = auth(c.get(server.url(&format!("/files/{id}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Expired: 410 once the clock passes the expiry.
    let expires = START_SECS + 60;
    let response =
        auth(c.post(server.url(&format!("/buckets/b/files?filename=soon&expires={expires}"))))
            .body("short-lived")
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 201);
    let soon: serde_json::Value = response.json().await.unwrap();
    let url = server.url(soon["url"].as_str().unwrap());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    server.clock.advance(Duration::from_secs(61));
    assert_eq!(c.get(&url).send().await.unwrap().status(), 410);

    // Restricted: 404 without a token, 200 with one, 404 with another file's token.
    let response = auth(c.post(server.url("/buckets/b/files?filename=secret&restricted=true")))
        .body("private bytes")
        .send()
        .await
        .unwrap();
    let secret: serde_json::Value = response.json().await.unwrap();
    let other = server.upload("b", "other", content(5, 5)).await;
    let url = server.url(secret["url"].as_str().unwrap());
    let response = c.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body = response.text().await.unwrap();
    assert!(!body.contains("restricted"), "{body}");
    let token: serde_json::Value =
        auth(c.post(server.url(&format!("/files/{}/token?ttl=300", secret["id"]))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let response = c
        .get(server.url(token["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private, max-age=0");
    assert_eq!(response.text().await.unwrap(), "private bytes");
    // The restricted file is not served by hash either.
    let response = c
        .get(server.url(&format!("/blobs/{}", secret["blake3"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let other_token: serde_json::Value =
        auth(c.post(server.url(&format!("/files/{}/token", other["id"]))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let response = c
        .get(format!(
            "{url}?token={}",
            other_token["token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = c.get(format!("{url}?token=garbage")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Bad filenames at upload.
    let response = auth(c.post(server.url("/buckets/b/files?filename=a%01b")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "bad_filename");
    let response = auth(c.post(server.url("/buckets/b/files")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "bad_query");
    server.stop().await;
}

#[tokio::test]
async fn tokens_expire_and_survive_one_rotation() {
    let server = TestServer::start(Options {
        secrets: ([1; 32], None),
        ..Options::default()
    })
    .await;
    let c = client();
    let response = c
        .post(server.url("/buckets/r/files?filename=s&restricted=true"))
        .basic_auth(USER, Some(PASSWORD))
        .body("restricted")
        .send()
        .await
        .unwrap();
    let file: serde_json::Value = response.json().await.unwrap();
    let token_for = |ttl: u64| {
        let request = c
            .post(server.url(&format!("/files/{}/token?ttl={ttl}", file["id"])))
            .basic_auth(USER, Some(PASSWORD));
        async move {
            let json: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            json["url"].as_str().unwrap().to_string()
        }
    };
    let short = token_for(30).await;
    let long = token_for(86_400).await;
    assert_eq!(
        c.get(server.url(&short)).send().await.unwrap().status(),
        200
    );
    server.clock.advance(Duration::from_secs(31));
    assert_eq!(
        c.get(server.url(&short)).send().await.unwrap().status(),
        404
    );
    assert_eq!(c.get(server.url(&long)).send().await.unwrap().status(), 200);

    // Rotate: the new secret, the old one still accepted.
    let (engine, dir, clock) = (
        server.engine.clone(),
        server.dir.clone(),
        server.clock.clone(),
    );
    server.stop().await;
    let rotated = TestServer::start_over(
        engine.clone(),
        dir.clone(),
        clock.clone(),
        Options {
            secrets: ([2; 32], Some([1; 32])),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        c.get(rotated.url(&long)).send().await.unwrap().status(),
        200
    );
    rotated.stop().await;
    // Rotate again: the first secret is no longer accepted.
    let twice = TestServer::start_over(
        engine,
        dir,
        clock,
        Options {
            secrets: ([3; 32], Some([2; 32])),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(c.get(twice.url(&long)).send().await.unwrap().status(), 404);
    twice.stop().await;
}

#[tokio::test]
async fn writers_are_checked_by_address_and_credentials() {
    let server = TestServer::start(Options::default()).await;
    let file = server.upload("a", "f", content(10, 1)).await;
    let c = client();
    let response = c.get(server.url("/stats")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = c
        .get(server.url("/stats"))
        .basic_auth(USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = c
        .get(server.url("/stats"))
        .basic_auth("nobody", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.stop().await;

    // A server that allows only 10.0.0.0/8: loopback writers are refused even with
    // credentials, readers are served.
    let server = TestServer::start(Options {
        allowed: vec!["10.0.0.0/8".parse().unwrap()],
        ..Options::default()
    })
    .await;
    let response = c
        .post(server.url("/buckets/a/files?filename=f"))
        .basic_auth(USER, Some(PASSWORD))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "forbidden_address");
    let record = server
        .state
        .store()
        .upload_bytes(
            blobstore::UploadRequest::new(blobstore::BucketName::new("a").unwrap(), "f"),
            b"hello",
            "tester",
        )
        .unwrap()
        .record;
    let response = c
        .get(server.url(&format!("/{}/f", record.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");
    assert!(file["id"].as_u64().is_some());
    server.stop().await;
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let server = TestServer::start(Options::default()).await;
    let body = content(50_000, 9);
    let response = client()
        .post(server.url("/buckets/d/files?filename=x"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-content-blake3", hex::encode([0u8; 32]))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "digest_mismatch");
    let response = client()
        .post(server.url("/buckets/d/files?filename=x"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-content-blake3", "nothex")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(server.state.store().summary().unwrap().files, 0);
    let response = client()
        .post(server.url("/buckets/d/files?filename=x"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-content-blake3", blake3::hash(&body).to_hex().as_str())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

async fn raw_request(server: &TestServer, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

fn auth_header() -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

#[tokio::test]
async fn oversized_upload_gets_413_before_its_body() {
    let server = TestServer::start(Options {
        limits: servers::common::Limits {
            max_body_bytes: 1 << 20,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let head = format!(
        "POST /buckets/l/files?filename=big HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n",
        auth_header(),
        10u64 << 30
    );
    let mut stream = raw_request(&server, &head).await;
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut answer))
        .await
        .expect("no answer before the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("too_large"), "{text}");

    // Chunked past the limit: 413 too, nothing stored.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|i| Ok(content(100_000, i))).collect();
    let response = client()
        .post(server.url("/buckets/l/files?filename=big"))
        .basic_auth(USER, Some(PASSWORD))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    assert_eq!(server.state.store().summary().unwrap().files, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_client_killed_mid_upload_leaves_nothing() {
    let server = TestServer::start(Options::default()).await;
    // A declared length, half sent, then the connection dropped.
    let head = format!(
        "POST /buckets/k/files?filename=half HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n",
        auth_header(),
        4 << 20
    );
    let mut stream = raw_request(&server, &head).await;
    stream.write_all(&content(2 << 20, 1)).await.unwrap();
    drop(stream);
    // Chunked, cut in the middle of a chunk.
    let head = format!(
        "POST /buckets/k/files?filename=chunked HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\n\r\n",
        auth_header()
    );
    let mut stream = raw_request(&server, &head).await;
    stream.write_all(b"100000\r\n").await.unwrap();
    stream.write_all(&content(300_000, 2)).await.unwrap();
    drop(stream);
    // A small declared length (read whole before the store sees it), half sent.
    let head = format!(
        "POST /buckets/k/files?filename=small HTTP/1.1\r\nHost: x\r\n{}Content-Length: 4096\r\n\r\n",
        auth_header()
    );
    let mut stream = raw_request(&server, &head).await;
    stream.write_all(&content(2048, 3)).await.unwrap();
    drop(stream);
    let mut aborted = false;
    for _ in 0..2000 {
        if server.state.uploads_aborted() == 3 {
            aborted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        aborted,
        "the server never saw the uploads abort: {}",
        server.state.uploads_aborted()
    );
    let store = server.state.store();
    assert_eq!(store.summary().unwrap().files, 0);
    assert_eq!(store.summary().unwrap().blobs, 0);
    assert_eq!(
        store
            .bucket_stats(&blobstore::BucketName::new("k").unwrap())
            .unwrap()
            .files,
        0
    );
    // And the server still serves.
    server.upload("k", "after", content(10, 3)).await;
    server.stop().await;
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let server = TestServer::start(Options::default()).await;
    server.upload("m", "f", content(1000, 1)).await;
    let c = client();
    let response = c.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("librarian_store_files 1"), "{text}");
    assert!(text.contains("librarian_store_stored_bytes 1000"), "{text}");
    assert!(
        text.contains(r#"librarian_http_requests_total{route="/buckets/{bucket}/files",method="POST",status="201"} 1"#),
        "{text}"
    );
    assert!(text.contains("librarian_gc_passes_total 0"), "{text}");

    // The OpenAPI document describes exactly the routes, and every route answers.
    let doc: serde_json::Value = c
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes: BTreeSet<(String, String)> = servers::librarian::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routes);
    for (method, path) in &routes {
        let concrete = path
            .replace("{bucket}", "m")
            .replace("{id}", "1")
            .replace("{filename}", "f")
            .replace("{blake3}", &"0".repeat(64))
            .replace("{person}", "p");
        let response = c
            .request(method.parse().unwrap(), server.url(&concrete))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_ne!(status, 405, "{method} {path}");
        if status == 404 && method != "HEAD" {
            assert_ne!(error_code(response).await, "no_route", "{method} {path}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn gc_collects_after_the_grace() {
    let server = TestServer::start(Options::default()).await;
    let file = server.upload("g", "f", content(100_000, 4)).await;
    let response = client()
        .delete(server.url(&format!("/files/{}", file["id"])))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let store = server.state.store().clone();
    assert_eq!(store.summary().unwrap().blobs, 1);
    server.clock.advance(Duration::from_secs(86_400 + 1));
    let state = server.state.clone();
    let report = tokio::task::spawn_blocking(move || state.store().gc(100).unwrap())
        .await
        .unwrap();
    server.state.store_metrics().record_gc(&report);
    assert_eq!(report.collected_blobs, 1);
    assert_eq!(store.summary().unwrap().blobs, 0);
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("librarian_gc_collected_blobs_total 1"),
        "{text}"
    );
    server.stop().await;
}

/// `PATCH /files/{id}` moves or clears the expiry and flips the restricted flag, and the
/// downloads follow at once (the hot-file cache included); bad bodies are 400 and change
/// nothing.
#[tokio::test]
async fn files_can_be_given_a_new_expiry_or_restricted() {
    let server = TestServer::start(Options::default()).await;
    let c = client();
    let patch = |id: u64, body: serde_json::Value| {
        c.patch(server.url(&format!("/files/{id}")))
            .basic_auth(USER, Some(PASSWORD))
            .json(&body)
    };
    let file = server.upload("b", "notes.txt", content(31, 100)).await;
    let id = file["id"].as_u64().unwrap();
    let url = server.url(&format!("/{id}/notes.txt"));
    // Read once, so that the small file is served from memory afterwards.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);

    // An expiry in the past: downloads are 410 at once.
    let past = START_SECS - 1;
    let response = patch(id, serde_json::json!({ "expires": past }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record: serde_json::Value = response.json().await.unwrap();
    assert_eq!(record["expires"], past);
    assert_eq!(record["restricted"], false);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 410);

    // Cleared: downloadable again.
    let response = patch(id, serde_json::json!({ "expires": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.json::<serde_json::Value>().await.unwrap()["expires"].is_null());
    let body = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.as_ref(), content(31, 100).as_slice());

    // Restricted: anonymous downloads are 404, a token opens it; both fields in one call.
    let later = START_SECS + 86_400;
    let response = patch(
        id,
        serde_json::json!({ "restricted": true, "expires": later }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let record: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (record["restricted"].clone(), record["expires"].clone()),
        (true.into(), later.into())
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    let token: serde_json::Value = c
        .post(server.url(&format!("/files/{id}/token")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let with_token = server.url(token["url"].as_str().unwrap());
    assert_eq!(c.get(&with_token).send().await.unwrap().status(), 200);

    // Bad bodies change nothing.
    for (body, code) in [
        (serde_json::json!({}), "bad_body"),
        (serde_json::json!({ "expire": 5 }), "bad_json"),
        (serde_json::json!({ "restricted": "yes" }), "bad_json"),
        (serde_json::json!({ "expires": i64::MAX }), "bad_body"),
    ] {
        let response = patch(id, body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let response = patch(99_999, serde_json::json!({ "restricted": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let record: serde_json::Value = server.get_json(&format!("/files/{id}")).await;
    assert_eq!(
        (record["restricted"].clone(), record["expires"].clone()),
        (true.into(), later.into())
    );
    // Writers only: an anonymous PATCH is refused.
    let response = c
        .patch(server.url(&format!("/files/{id}")))
        .json(&serde_json::json!({ "restricted": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
