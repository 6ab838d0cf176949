// Test-only: the librarian's end-to-end scenarios share these helpers; uploads and downloads
// are in `transfers.rs`, buckets, files' lifecycle and access in `files.rs`.
//! The librarian end to end over real sockets, with reqwest and curl.

mod files;
mod transfers;

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
async fn health_metrics_and_openapi() {
    let server = TestServer::start(Options::default()).await;
    server.upload("m", "f", content(1000, 1)).await;
    let c = client();
    let response = c.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = crate::support::get_text(&server.url("/metrics")).await;
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
