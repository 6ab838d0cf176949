//! Uploads and downloads over real sockets: reqwest, curl and apt-style ranges, resumes,
//! refused and interrupted uploads.

use super::*;

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
