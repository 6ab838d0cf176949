//! Buckets, quotas, files' lifecycle (delete, expiry, restriction, GC) and who may write.

use super::*;

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
    let text = crate::support::get_text(&server.url("/metrics")).await;
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
