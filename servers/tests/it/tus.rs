//! The tus 1.0 routes over a real socket (reqwest): discovery, creation, appends with and
//! without checksums, every refusal the protocol names, termination and expiry. The real
//! tus client (tuspy) and server kills are in `tus_clients.rs`.

use base64::Engine as _;
use reqwest::{Method, RequestBuilder, Response};
use sha2::{Digest as _, Sha256};

use crate::support::{client, content, error_code, Options, TestServer, PASSWORD, USER};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn tus(builder: RequestBuilder) -> RequestBuilder {
    builder
        .basic_auth(USER, Some(PASSWORD))
        .header("tus-resumable", "1.0.0")
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn create(server: &TestServer, bucket: &str, length: u64, name: &str) -> Response {
    tus(client().post(server.url(&format!("/buckets/{bucket}/uploads"))))
        .header("upload-length", length.to_string())
        .header(
            "upload-metadata",
            format!(
                "filename {},filetype {},mine",
                b64(name.as_bytes()),
                b64(b"application/x-iso9660-image")
            ),
        )
        .send()
        .await
        .unwrap()
}

fn patch(server: &TestServer, location: &str, offset: u64, body: &[u8]) -> RequestBuilder {
    tus(client().patch(server.url(location)))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(body.to_vec())
}

async fn offset_of(server: &TestServer, location: &str) -> (u16, String) {
    let response = tus(client().head(server.url(location)))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        header(&response, "upload-offset"),
    )
}

#[tokio::test]
async fn tus_protocol_over_a_socket() {
    let server = TestServer::start(Options::default()).await;
    let options = tus(client().request(Method::OPTIONS, server.url("/buckets/isos/uploads")))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(header(&options, "tus-version"), "1.0.0");
    assert_eq!(
        header(&options, "tus-extension"),
        "creation,termination,checksum,expiration"
    );
    assert!(header(&options, "tus-max-size").parse::<u64>().unwrap() > 0);
    assert_eq!(
        header(&options, "tus-checksum-algorithm"),
        "sha1,sha256,md5"
    );

    // Another protocol version: 412 with the one spoken.
    let old = client()
        .post(server.url("/buckets/isos/uploads"))
        .basic_auth(USER, Some(PASSWORD))
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 412);
    assert_eq!(header(&old, "tus-version"), "1.0.0");

    let data = content(300_000, 1);
    let created = create(&server, "isos", data.len() as u64, "disc.iso").await;
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "tus-resumable"), "1.0.0");
    assert!(!header(&created, "upload-expires").is_empty());
    let location = header(&created, "location");
    assert!(
        location.starts_with("/uploads/") && location.len() == 9 + 32,
        "{location}"
    );

    let head = tus(client().head(server.url(&location)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "upload-offset"), "0");
    assert_eq!(header(&head, "upload-length"), "300000");
    assert_eq!(header(&head, "cache-control"), "no-store");
    assert!(header(&head, "upload-metadata").ends_with(",mine"));

    let wrong_type = tus(client().patch(server.url(&location)))
        .header("content-type", "application/octet-stream")
        .header("upload-offset", "0")
        .body(vec![1])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let wrong_offset = patch(&server, &location, 5, &data[..10])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_offset.status(), 409);
    assert_eq!(header(&wrong_offset, "upload-offset"), "0");

    let first = patch(&server, &location, 0, &data[..100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 204);
    assert_eq!(header(&first, "upload-offset"), "100000");
    assert!(!header(&first, "upload-expires").is_empty());

    // A checksum that does not match: 460, nothing appended.
    let other = Sha256::digest(&data[..10]);
    let bad = patch(&server, &location, 100_000, &data[100_000..200_000])
        .header("upload-checksum", format!("sha256 {}", b64(&other)))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 460);
    assert_eq!(error_code(bad).await, "checksum_mismatch");
    assert_eq!(offset_of(&server, &location).await, (200, "100000".into()));
    let unknown = patch(&server, &location, 100_000, &data[100_000..200_000])
        .header("upload-checksum", "crc32 AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let good = Sha256::digest(&data[100_000..200_000]);
    let second = patch(&server, &location, 100_000, &data[100_000..200_000])
        .header("upload-checksum", format!("sha256 {}", b64(&good)))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 204);
    assert_eq!(header(&second, "upload-offset"), "200000");

    // Past Upload-Length: 413, nothing appended.
    let past = patch(&server, &location, 200_000, &content(100_001, 9))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 413);
    assert_eq!(offset_of(&server, &location).await, (200, "200000".into()));

    let last = patch(&server, &location, 200_000, &data[200_000..])
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 204);
    assert_eq!(header(&last, "upload-offset"), "300000");
    let id = header(&last, "x-file-id");
    let revision: u64 = header(&last, "x-revision").parse().unwrap();
    assert!(revision > 0);
    let file = server.get_json(&format!("/files/{id}")).await;
    assert_eq!(file["size"], 300_000);
    assert_eq!(file["filename"], "disc.iso");
    assert_eq!(file["content_type"], "application/x-iso9660-image");
    assert_eq!(file["sha256"], blobstore::to_hex(&Sha256::digest(&data)));
    let body = client()
        .get(server.url(&format!("/{id}/disc.iso")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], &data[..]);
    let changes = server
        .get_json(&format!("/changes?after={}", revision - 1))
        .await;
    assert_eq!(changes["changes"][0]["kind"], "file.created");
    assert_eq!(server.get_json("/buckets/isos").await["files"], 1);
    // Finished: HEAD says where the file is.
    let head = tus(client().head(server.url(&location)))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head, "upload-offset"), "300000");
    assert_eq!(header(&head, "x-file-id"), id);

    // Unknown uploads: 404.
    let missing = "/uploads/0123456789abcdef0123456789abcdef";
    assert_eq!(offset_of(&server, missing).await.0, 404);
    assert_eq!(offset_of(&server, "/uploads/nonsense").await.0, 404);

    // Termination.
    let created = create(&server, "isos", 10, "t.bin").await;
    let gone = header(&created, "location");
    assert_eq!(
        patch(&server, &gone, 0, b"12345")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let deleted = tus(client().delete(server.url(&gone)))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(offset_of(&server, &gone).await.0, 404);
    assert_eq!(
        patch(&server, &gone, 5, b"67890")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Expiry: a day without an append, 410; GC removes it, 404.
    let created = create(&server, "isos", 10, "e.bin").await;
    let stale = header(&created, "location");
    server.clock.advance(std::time::Duration::from_secs(86_401));
    assert_eq!(offset_of(&server, &stale).await.0, 410);
    assert_eq!(
        patch(&server, &stale, 0, b"1")
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    assert!(server.state.store().gc(100).unwrap().expired_uploads >= 1);
    assert_eq!(offset_of(&server, &stale).await.0, 404);

    // The quota is checked at creation from Upload-Length; so is the size limit.
    let quota = client()
        .put(server.url("/buckets/small"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&serde_json::json!({"quota_bytes": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(quota.status(), 200);
    let over = create(&server, "small", 11, "big.bin").await;
    assert_eq!(over.status(), 409);
    assert_eq!(error_code(over).await, "quota_exceeded");
    let huge = create(&server, "isos", u64::MAX / 2, "huge.bin").await;
    assert_eq!(huge.status(), 413);
    let nameless = tus(client().post(server.url("/buckets/isos/uploads")))
        .header("upload-length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(nameless.status(), 400);
    // A zero-length upload is a file at once.
    let empty = create(&server, "isos", 0, "empty").await;
    assert_eq!(empty.status(), 201);
    assert!(!header(&empty, "x-file-id").is_empty());
    server.stop().await;
}
