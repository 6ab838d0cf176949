//! The HTTP handling of both servers, in-process: arbitrary requests through the router over
//! a memory-backed store.
//!
//! Input: requests separated by `\n--\n` (at most 8). Each starts with a flags byte (bits 0-1:
//! the peer, 127.0.0.1, ::1, 10.1.2.3 (not allowed) or none; bit 2: valid Basic credentials;
//! bit 3: the change log's history indexer runs before the request, so history routes read
//! both indexed events and the unindexed tail; the store starts no indexer thread per input),
//! then `METHOD TARGET`, header lines, a blank line and the body, as on the wire. `$URL` and
//! `$ID` in the target stand for the `url` and `id` of the last JSON answer that had them, so
//! the fuzzer can chain an upload and its download. A request that `http` cannot represent is
//! skipped (hyper would refuse it before the router).
//!
//! Asserted: no panic; no 5xx (nothing here is deliberately unavailable: the store is in
//! memory and requests go one at a time); every JSON answer parses, and an error's names its
//! code; an acknowledged upload reads back byte for byte; afterwards the store's own check
//! finds no drift. With `FUZZ_TRACE` set in the environment, every request and answer is
//! printed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use base64::Engine as _;
use blobstore::{Access, FileId, StoreBuilder};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use servers::common::access::hash_password;
use servers::common::{Credential, Limits, ServerConfig};
use tower::ServiceExt;

const USER: &str = "writer";
const PASSWORD: &str = "secret";
const MAX_REQUESTS: usize = 8;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn config() -> ServerConfig {
    static HASH: OnceLock<String> = OnceLock::new();
    ServerConfig {
        credentials: vec![Credential {
            user: USER.into(),
            hash: HASH.get_or_init(|| hash_password(PASSWORD)).clone(),
        }],
        allowed_cidrs: servers::common::config::loopback_cidrs(),
        limits: Limits {
            max_body_bytes: 4096,
            max_json_bytes: 512,
            // No store threads: each input builds a service, and a pool thread spawned per
            // input was most of its setup; the runtime's blocking threads outlive the inputs.
            store_threads: 0,
            ..Limits::default()
        },
        ..ServerConfig::default()
    }
}

/// One decoded request.
#[derive(Debug)]
struct Call {
    request: Request<Body>,
    body: Vec<u8>,
    /// Whether the history indexer runs first (flags bit 3).
    index_first: bool,
}

fn decode(chunk: &[u8], url: &str, id: &str) -> Option<Call> {
    let (&flags, rest) = chunk.split_first()?;
    let head_end = find(rest, b"\n\n");
    let (head, body) = match head_end {
        Some(i) => (&rest[..i], rest[i + 2..].to_vec()),
        None => (rest, Vec::new()),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = std::str::from_utf8(lines.next()?).ok()?;
    let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let target = target.replace("$URL", url).replace("$ID", id);
    let uri: Uri = target.parse().ok()?;
    uri.path_and_query()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        builder = builder.header(name, value);
    }
    if flags & 4 != 0 {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        builder = builder.header(http::header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    let mut request = builder.body(Body::from(body.clone())).ok()?;
    let peer = match flags & 3 {
        0 => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        1 => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        2 => Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        _ => None,
    };
    if let Some(ip) = peer {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40000)));
    }
    Some(Call {
        request,
        body,
        index_first: flags & 8 != 0,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_requests(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_REQUESTS {
        match find(rest, b"\n--\n") {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 4..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

/// What a response said, for the next request and the checks.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    json: Option<serde_json::Value>,
}

async fn send(router: &Router, call: Call) -> (Answer, Vec<u8>) {
    let method = call.request.method().clone();
    let target = call.request.uri().to_string();
    let response = router
        .clone()
        .oneshot(call.request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    // A file's bytes (a download: 200 or 206 with a `Content-Disposition`) carry the type
    // its uploader gave, which may be `application/json` over any bytes, or a range of them.
    let file_content = status.is_success()
        && response
            .headers()
            .contains_key(http::header::CONTENT_DISPOSITION);
    let is_json = !file_content
        && response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_else(|e| panic!("{method} {target}: body failed: {e}"));
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!(
            "{method} {target} -> {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(
        !status.is_server_error(),
        "{method} {target}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    let json = if is_json && method != Method::HEAD {
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {target}: {status} with bad JSON: {e}"));
        if !status.is_success() {
            assert!(
                value["error"]["code"].is_string(),
                "{method} {target}: {status} without an error code: {value}"
            );
        }
        Some(value)
    } else {
        None
    };
    (Answer { status, json }, call.body)
}

fn remember(json: &serde_json::Value, url: &mut String, id: &mut String) {
    if let Some(u) = json["url"].as_str() {
        *url = u.to_string();
    }
    if let Some(i) = json["id"].as_u64() {
        *id = i.to_string();
    }
}

/// The librarian's router over a memory engine and blob bytes in memory.
pub fn librarian_http(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = engine::EngineConfig::memory()
        .open(blobstore::KEYSPACES)
        .expect("memory engine");
    let store = StoreBuilder::with_engine(engine, dir.path())
        .backend(Arc::new(blobstore::testing::MemBackend::new()))
        .inline_threshold(64)
        // A small hot-file cache: the default one sizes its tables for 16,384 files per input.
        .hot_cache_bytes(64 << 10)
        .token_secrets([9; 32], None)
        .open()
        .expect("store");
    store.change_log().set_background_indexing(false);
    let state = servers::librarian::Librarian::new(store, &config()).expect("state");
    let router = servers::librarian::router(state.clone());
    let (mut url, mut id) = ("/1/f".to_string(), "1".to_string());
    runtime().block_on(async {
        for chunk in split_requests(data) {
            let Some(call) = decode(chunk, &url, &id) else {
                continue;
            };
            if call.index_first {
                // A quick write to the memory engine between requests, none in flight.
                state.store().change_log().index_pending().unwrap();
            }
            let is_upload = call.request.method() == Method::POST
                && call.request.uri().path().ends_with("/files");
            let (answer, body) = send(&router, call).await;
            if let Some(json) = &answer.json {
                if is_upload && answer.status == StatusCode::CREATED {
                    let file = FileId(json["id"].as_u64().expect("an upload's id"));
                    let mut content = Vec::new();
                    let store = state.store().clone();
                    let read = tokio::task::spawn_blocking(move || {
                        std::io::Read::read_to_end(
                            &mut store.read(file, Access::Trusted, None)?,
                            &mut content,
                        )
                        .map_err(|e| blobstore::Error::io("read", "", e))?;
                        Ok::<_, blobstore::Error>(content)
                    })
                    .await
                    .unwrap();
                    assert_eq!(read.expect("an acknowledged upload reads"), body);
                }
                remember(json, &mut url, &mut id);
            }
        }
    });
    let report = state.store().check().expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// The directory's router over a memory graph store.
pub fn directory_http(data: &[u8]) {
    let engine = engine::EngineConfig::memory()
        .open(&servers::directory::config::keyspaces())
        .expect("memory engine");
    let store = graphdb::GraphStore::open(Arc::clone(&engine)).expect("graph store");
    store.change_log().set_background_indexing(false);
    let log = Arc::clone(store.change_log());
    let commits =
        servers::directory::config::open_commit_graphs(&store, engine).expect("commit graphs");
    let state = servers::directory::Directory::new(store, commits, &config()).expect("state");
    let router = servers::directory::router(state.clone());
    let (mut url, mut id) = ("/".to_string(), "1".to_string());
    runtime().block_on(async {
        for chunk in split_requests(data) {
            let Some(call) = decode(chunk, &url, &id) else {
                continue;
            };
            if call.index_first {
                // A quick write to the memory engine between requests, none in flight.
                log.index_pending().unwrap();
            }
            let (answer, _) = send(&router, call).await;
            if let Some(json) = &answer.json {
                remember(json, &mut url, &mut id);
            }
        }
    });
    let teams = graphdb::Teams::open(state.store()).expect("teams");
    assert!(teams.check().is_clean(), "{:?}", teams.check());
    let sets = graphdb::PackageSets::open(state.store()).expect("package sets");
    assert!(sets.check().is_clean(), "{:?}", sets.check());
}
