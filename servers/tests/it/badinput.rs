// Test-only, long on purpose: the bad-input tables of docs/RELIABILITY.md, row for row, in one
// file so that it reads beside them.
//! The bad-input tables of docs/RELIABILITY.md, in-process through each server's router: each
//! kind of bad input gets its answer (status and JSON error code), and afterwards nothing was
//! lost or half-written: the store's statistics and listings are as before and its own
//! `check` finds no drift. The rows that need a real socket (a client gone mid-upload, an
//! oversized head, timeouts) are tested in `librarian.rs` and `infra.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use base64::Engine as _;
use blobstore::testing::{Fault, FaultyBackend};
use blobstore::{LocalFsBackend, ManualClock, StoreBuilder, Timestamp};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use servers::common::access::hash_password;
use servers::common::{Credential, Limits, ServerConfig};
use tower::ServiceExt;

const USER: &str = "writer";
const PASSWORD: &str = "pw";

fn config() -> ServerConfig {
    ServerConfig {
        credentials: vec![Credential {
            user: USER.into(),
            hash: hash_password(PASSWORD),
        }],
        allowed_cidrs: servers::common::config::loopback_cidrs(),
        limits: Limits {
            max_body_bytes: 64 << 10,
            max_json_bytes: 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    }
}

/// A request: method, target, extra headers, body, whether to send valid credentials, and the
/// peer address.
struct Req {
    method: Method,
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
    credentials: Option<String>,
    peer: IpAddr,
}

fn req(method: Method, target: impl Into<String>) -> Req {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    Req {
        method,
        target: target.into(),
        headers: Vec::new(),
        body: Body::empty(),
        credentials: Some(format!("Basic {basic}")),
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

impl Req {
    fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    fn json(self, text: &str) -> Self {
        self.header("content-type", "application/json")
            .body(text.to_string())
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn credentials(mut self, value: Option<&str>) -> Self {
        self.credentials = value.map(str::to_string);
        self
    }

    fn peer(mut self, ip: IpAddr) -> Self {
        self.peer = ip;
        self
    }
}

/// Sends `r` through `router`: the status and the JSON error code (empty when none).
async fn send(router: &Router, r: Req) -> (StatusCode, String, serde_json::Value) {
    let mut builder = Request::builder().method(r.method).uri(&r.target);
    for (name, value) in r.headers {
        builder = builder.header(name, value);
    }
    if let Some(auth) = r.credentials {
        builder = builder.header("authorization", auth);
    }
    let mut request = builder.body(r.body).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(r.peer, 50000)));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = json["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, json)
}

/// Runs a table of (what, request, expected status, expected code); returns how many ran.
/// Every row runs; the mismatches are reported together.
async fn table(router: &Router, rows: Vec<(&str, Req, u16, &str)>) -> usize {
    let n = rows.len();
    let mut wrong = Vec::new();
    for (what, r, status, code) in rows {
        let target = r.target.clone();
        let (got, got_code, json) = send(router, r).await;
        let message = json["error"]["message"].as_str().unwrap_or_default();
        if got.as_u16() != status || got_code != code || (!got.is_success() && message.is_empty()) {
            wrong.push(format!("{what}: {target}: {got} {json}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    n
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

#[tokio::test]
async fn librarian_bad_input_table() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_millis(Timestamp::now().as_unix_millis()));
    let engine = engine::EngineConfig::memory()
        .open(blobstore::KEYSPACES)
        .unwrap();
    // A filesystem backend whose disk can fill up.
    let backend = FaultyBackend::new(LocalFsBackend::open(dir.path()).unwrap());
    let store = StoreBuilder::with_engine(engine, dir.path())
        .backend(Arc::new(backend.clone()))
        .clock(clock.clone())
        .token_secrets([1; 32], None)
        .open()
        .unwrap();
    let state = servers::librarian::Librarian::new(store, &config()).unwrap();
    let router = servers::librarian::router(state.clone());
    use Method as M;

    // What is there before: one public file, one restricted file, and a token for each.
    let (status, _, public) = send(
        &router,
        req(M::POST, "/buckets/b/files?filename=pub.txt").body("public"),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, secret) = send(
        &router,
        req(
            M::POST,
            "/buckets/b/files?filename=secret.txt&restricted=true",
        )
        .body("secret"),
    )
    .await;
    assert_eq!(status, 201);
    let secret_url = secret["url"].as_str().unwrap().to_string();
    let pub_id = public["id"].as_u64().unwrap();
    let token_of = |json: &serde_json::Value| json["token"].as_str().unwrap().to_string();
    let (_, _, t) = send(
        &router,
        req(M::POST, format!("/files/{}/token?ttl=60", secret["id"])),
    )
    .await;
    let secret_token = token_of(&t);
    let (_, _, t) = send(
        &router,
        req(M::POST, format!("/files/{pub_id}/token?ttl=60")),
    )
    .await;
    let other_token = token_of(&t);
    let (_, _, t) = send(
        &router,
        req(M::POST, format!("/files/{}/token?ttl=1", secret["id"])),
    )
    .await;
    let short_token = token_of(&t);
    clock.advance(Duration::from_secs(2));
    let forged = format!("{}.{}", i64::MAX / 1000, "0".repeat(64));
    let (_, _, before_stats) = send(&router, req(M::GET, "/buckets/b")).await;
    let before_summary = state.store().summary().unwrap();
    let unknown_hash = "ab".repeat(32);
    let basic = |user: &str, pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    // A body that fails mid-stream: the client went away.
    let gone = || {
        Body::from_stream(futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 30_000])),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client gone",
            )),
        ]))
    };

    let rows = vec![
        (
            "malformed JSON",
            req(M::PUT, "/buckets/b").json("{\"quota_bytes\": "),
            400,
            "bad_json",
        ),
        (
            "JSON of the wrong type",
            req(M::PUT, "/buckets/b").json("{\"quota_bytes\": -1}"),
            400,
            "bad_json",
        ),
        (
            "JSON with an unknown field",
            req(M::PUT, "/buckets/b").json("{\"quota\": 1}"),
            400,
            "bad_json",
        ),
        (
            "oversize JSON",
            req(M::PUT, "/buckets/b").json(&format!("{{\"quota_bytes\": 1{}}}", " ".repeat(2000))),
            413,
            "too_large",
        ),
        (
            "oversize upload (Content-Length)",
            req(M::POST, "/buckets/b/files?filename=big")
                .header("content-length", "70000")
                .body(vec![0u8; 70_000]),
            413,
            "too_large",
        ),
        (
            "oversize upload (streamed)",
            req(M::POST, "/buckets/b/files?filename=big").body(Body::from_stream(
                futures_util::stream::iter(
                    (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 10_000]))),
                ),
            )),
            413,
            "too_large",
        ),
        (
            "truncated body, client gone",
            req(M::POST, "/buckets/b/files?filename=gone").body(gone()),
            400,
            "upload_aborted",
        ),
        (
            "path traversal in a filename",
            req(M::POST, "/buckets/b/files?filename=..%2F..%2Fetc%2Fpasswd").body("x"),
            400,
            "bad_filename",
        ),
        (
            "a filename of ..",
            req(M::POST, "/buckets/b/files?filename=..").body("x"),
            400,
            "bad_filename",
        ),
        (
            "control character in a filename",
            req(M::POST, "/buckets/b/files?filename=a%0Ab").body("x"),
            400,
            "bad_filename",
        ),
        (
            "NUL in a filename",
            req(M::POST, "/buckets/b/files?filename=a%00b").body("x"),
            400,
            "bad_filename",
        ),
        (
            "invalid UTF-8 in a filename",
            req(M::POST, "/buckets/b/files?filename=a%FFb").body("x"),
            400,
            "bad_query",
        ),
        (
            "filename over 255 bytes",
            req(
                M::POST,
                format!("/buckets/b/files?filename={}", "x".repeat(256)),
            )
            .body("x"),
            400,
            "bad_filename",
        ),
        (
            "no filename",
            req(M::POST, "/buckets/b/files").body("x"),
            400,
            "bad_query",
        ),
        (
            "control character in a bucket",
            req(M::POST, "/buckets/a%01b/files?filename=x").body("x"),
            400,
            "bad_bucket",
        ),
        (
            "invalid UTF-8 in a bucket",
            req(M::POST, "/buckets/a%FFb/files?filename=x").body("x"),
            400,
            "bad_path",
        ),
        (
            "bad expiry",
            req(M::POST, "/buckets/b/files?filename=x&expires=soon").body("x"),
            400,
            "bad_query",
        ),
        (
            "BLAKE3 mismatch",
            req(M::POST, "/buckets/b/files?filename=x")
                .header("x-content-blake3", unknown_hash.clone())
                .body("x"),
            400,
            "digest_mismatch",
        ),
        (
            "bad hex in X-Content-BLAKE3",
            req(M::POST, "/buckets/b/files?filename=x")
                .header("x-content-blake3", "zz")
                .body("x"),
            400,
            "bad_digest",
        ),
        (
            "bad Content-Digest",
            req(M::POST, "/buckets/b/files?filename=x")
                .header("content-digest", "sha-256=:!!:")
                .body("x"),
            400,
            "bad_digest",
        ),
        (
            "unknown file id",
            req(M::GET, "/files/999999"),
            404,
            "not_found",
        ),
        (
            "id out of range",
            req(M::GET, "/files/18446744073709551616"),
            400,
            "bad_id",
        ),
        ("negative id", req(M::DELETE, "/files/-1"), 400, "bad_id"),
        (
            "unknown id, reader route",
            req(M::GET, "/999999/x"),
            404,
            "not_found",
        ),
        (
            "non-numeric id, reader route",
            req(M::GET, "/abc/x"),
            400,
            "bad_id",
        ),
        (
            "wrong filename",
            req(M::GET, format!("/{pub_id}/other.txt")),
            404,
            "not_found",
        ),
        (
            "bad hex in a blob hash",
            req(M::GET, "/blobs/xyz"),
            400,
            "bad_hash",
        ),
        (
            "unknown blob hash",
            req(M::GET, format!("/blobs/{unknown_hash}")),
            404,
            "not_found",
        ),
        (
            "bad hex in a search",
            req(M::GET, "/search?sha256=xyz"),
            400,
            "bad_digest",
        ),
        (
            "short hex in a search",
            req(M::GET, format!("/search?sha256={}", "a".repeat(63))),
            400,
            "bad_digest",
        ),
        (
            "unknown digest in a search",
            req(M::GET, "/search?crc32=00000000"),
            400,
            "bad_query",
        ),
        (
            "range outside the content",
            req(M::GET, format!("/{pub_id}/pub.txt")).header("range", "bytes=100-"),
            416,
            "bad_range",
        ),
        (
            "restricted without a token",
            req(M::GET, secret_url.clone()),
            404,
            "not_found",
        ),
        (
            "forged token",
            req(M::GET, format!("{secret_url}?token={forged}")),
            404,
            "not_found",
        ),
        (
            "malformed token",
            req(M::GET, format!("{secret_url}?token=1.2.3")),
            404,
            "not_found",
        ),
        (
            "expired token",
            req(M::GET, format!("{secret_url}?token={short_token}")),
            404,
            "not_found",
        ),
        (
            "another file's token",
            req(M::GET, format!("{secret_url}?token={other_token}")),
            404,
            "not_found",
        ),
        (
            "no credentials",
            req(M::POST, "/buckets/b/files?filename=x")
                .credentials(None)
                .body("x"),
            401,
            "unauthorized",
        ),
        (
            "wrong password",
            req(M::POST, "/buckets/b/files?filename=x")
                .credentials(Some(&basic(USER, "nope")))
                .body("x"),
            401,
            "unauthorized",
        ),
        (
            "unknown user",
            req(M::GET, "/stats").credentials(Some(&basic("mallory", PASSWORD))),
            401,
            "unauthorized",
        ),
        (
            "malformed Authorization",
            req(M::GET, "/stats").credentials(Some("Basic !!!")),
            401,
            "unauthorized",
        ),
        (
            "address outside the allowed ranges",
            req(M::POST, "/buckets/b/files?filename=x")
                .peer(OUTSIDE)
                .body("x"),
            403,
            "forbidden_address",
        ),
        (
            "unknown route",
            req(M::GET, "/no/such/route/here"),
            404,
            "no_route",
        ),
        (
            "wrong method",
            req(M::PATCH, "/stats"),
            405,
            "method_not_allowed",
        ),
    ];
    let mut tried = table(&router, rows).await;

    // The token that fits opens the file, so the rows above failed for their reason alone.
    let (status, _, _) = send(
        &router,
        req(M::GET, format!("{secret_url}?token={secret_token}")).credentials(None),
    )
    .await;
    assert_eq!(status, 200);

    // A full disk: 507, and nothing half-written becomes visible.
    backend.set(Fault::DiskFull { after: 10_000 });
    let rows = vec![(
        "full disk",
        req(M::POST, "/buckets/b/files?filename=full.bin").body(vec![3u8; 50_000]),
        507,
        "insufficient_storage",
    )];
    tried += table(&router, rows).await;
    backend.set(Fault::Healthy);

    // Nothing was lost or half-written.
    let (_, _, after_stats) = send(&router, req(M::GET, "/buckets/b")).await;
    assert_eq!(after_stats, before_stats);
    assert_eq!(state.store().summary().unwrap(), before_summary);
    let report = state.store().check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let (status, _, _) = send(&router, req(M::GET, format!("/{pub_id}/pub.txt"))).await;
    assert_eq!(status, 200);
    // Leftovers of the refused uploads are temporaries or orphans, swept after the grace.
    clock.advance(blobstore::DEFAULT_GRACE + Duration::from_secs(60));
    let sweep = state.store().sweep_orphans().unwrap();
    assert_eq!(sweep.orphan_blobs, 0, "{sweep:?}");
    // With room again, the same upload succeeds.
    let (status, _, _) = send(
        &router,
        req(M::POST, "/buckets/b/files?filename=full.bin").body(vec![3u8; 50_000]),
    )
    .await;
    assert_eq!(status, 201);
    eprintln!("librarian: {tried} bad inputs tried");
}

#[tokio::test]
async fn directory_bad_input_table() {
    let engine = engine::EngineConfig::memory()
        .open(&servers::directory::config::keyspaces())
        .unwrap();
    let store = graphdb::GraphStore::open(Arc::clone(&engine)).unwrap();
    let commits = servers::directory::config::open_commit_graphs(&store, engine).unwrap();
    let state = servers::directory::Directory::new(store, commits, &config()).unwrap();
    let router = servers::directory::router(state.clone());
    use Method as M;
    let member = |role: &str| format!("{{\"role\": \"{role}\", \"expires\": null}}");
    for (path, body) in [
        ("/teams/core/members/alice", member("admin")),
        ("/teams/ubuntu/members/core", member("member")),
    ] {
        let (status, _, json) = send(&router, req(M::PUT, path).json(&body)).await;
        assert_eq!(status, 200, "{json}");
    }
    let export = || {
        let teams = graphdb::Teams::open(state.store()).unwrap();
        let sets = graphdb::PackageSets::open(state.store()).unwrap();
        let mut out = Vec::new();
        teams.export_tsv(&mut out).unwrap();
        sets.export_tsv(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let (a, b, c, d) = (
        "a".repeat(40),
        "b".repeat(40),
        "c".repeat(40),
        "d".repeat(40),
    );
    let (status, _, json) = send(
        &router,
        req(M::POST, "/repos/r/commits").body(format!("{a}\n{b} {a}\n")),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let (status, _, json) = send(
        &router,
        req(M::PUT, "/repos/r/branches/main").json(&format!("{{\"tip\": \"{b}\"}}")),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let before = export();
    let tsv = |rows: &str| format!("team\tmember\trole\texpires\n{rows}");
    let truncated = || {
        Body::from_stream(futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from(tsv("x\ty\tmember\t\n"))),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client gone",
            )),
        ]))
    };
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong"))
    );

    let rows = vec![
        (
            "malformed JSON",
            req(M::PUT, "/teams/core/members/bob").json("{\"role\": "),
            400,
            "bad_json",
        ),
        (
            "JSON of the wrong type",
            req(M::PUT, "/teams/core/members/bob").json("{\"role\": 5}"),
            400,
            "bad_json",
        ),
        (
            "bad expiry in JSON",
            req(M::PUT, "/teams/core/members/bob")
                .json("{\"role\": \"member\", \"expires\": \"soon\"}"),
            400,
            "bad_json",
        ),
        (
            "unknown role with a control character",
            req(M::PUT, "/teams/core/members/bob").json("{\"role\": \"a\\u0001\"}"),
            400,
            "bad_relation",
        ),
        (
            "oversize JSON",
            req(M::PUT, "/teams/core/members/bob")
                .json(&format!("{{\"role\": \"member\"{}}}", " ".repeat(2000))),
            413,
            "too_large",
        ),
        (
            "control character in a name",
            req(M::PUT, "/teams/a%01b"),
            400,
            "bad_name",
        ),
        (
            "NUL in a name",
            req(M::PUT, "/persons/a%00b"),
            400,
            "bad_name",
        ),
        (
            "invalid UTF-8 in a name",
            req(M::PUT, "/persons/a%FFb"),
            400,
            "bad_path",
        ),
        (
            "name over 255 bytes",
            req(M::PUT, format!("/teams/{}", "t".repeat(256))),
            400,
            "bad_name",
        ),
        (
            "a cycle",
            req(M::PUT, "/teams/core/members/ubuntu").json(&member("member")),
            409,
            "cycle",
        ),
        (
            "a team as its own member",
            req(M::PUT, "/teams/core/members/core").json(&member("member")),
            409,
            "cycle",
        ),
        (
            "a person with members",
            req(M::PUT, "/teams/alice/members/bob").json(&member("member")),
            400,
            "person_has_no_members",
        ),
        (
            "bad relation for a new member",
            req(M::PUT, "/teams/core/members/newcomer").json(&member("Not A Relation")),
            400,
            "bad_relation",
        ),
        (
            "a new team as its own member",
            req(M::PUT, "/teams/newteam/members/newteam").json(&member("member")),
            409,
            "cycle",
        ),
        (
            "oversize import",
            req(M::POST, "/import/teams").body(tsv(&"x\ty\tmember\t\n".repeat(7000))),
            413,
            "too_large",
        ),
        (
            "bad hex in a pushed commit",
            req(M::POST, "/repos/r/commits").body("zz\n"),
            400,
            "bad_import",
        ),
        (
            "an unknown parent commit",
            req(M::POST, "/repos/r/commits").body(format!("{d} {c}\n")),
            400,
            "bad_import",
        ),
        (
            "a commit cycle",
            req(M::POST, "/repos/r/commits").body(format!("{c} {d}\n{d} {c}\n")),
            400,
            "bad_import",
        ),
        (
            "a known commit with other parents",
            req(M::POST, "/repos/r/commits").body(format!("{c}\n{b} {c}\n")),
            409,
            "conflicting_parents",
        ),
        (
            "a SHA-256 commit pushed to a SHA-1 repository",
            req(M::POST, "/repos/r/commits").body(format!("{}\n", "e".repeat(64))),
            400,
            "bad_commits",
        ),
        (
            "a SHA-256 import into a SHA-1 repository (found by directory_http)",
            req(M::POST, "/import/repos/r").body(format!("{}\n", "e".repeat(64))),
            400,
            "bad_commits",
        ),
        (
            "pushed commits not UTF-8",
            req(M::POST, "/repos/r/commits").body(vec![0xff, b'\n']),
            400,
            "bad_body",
        ),
        (
            "repository import truncated, client gone",
            req(M::POST, "/import/repos/r").body(truncated()),
            400,
            "bad_body",
        ),
        (
            "bad hex in a branch tip",
            req(M::PUT, "/repos/r/branches/main").json("{\"tip\": \"xyz\"}"),
            400,
            "bad_hex",
        ),
        (
            "a branch to an unknown commit",
            req(M::PUT, "/repos/r/branches/topic").json(&format!("{{\"tip\": \"{c}\"}}")),
            404,
            "not_found",
        ),
        (
            "an unknown branch to delete",
            req(M::DELETE, "/repos/r/branches/nope"),
            404,
            "not_found",
        ),
        (
            "bad hex in an ancestry query",
            req(
                M::GET,
                format!("/repos/r/ancestry?ancestor=zz&descendant={b}"),
            ),
            400,
            "bad_hex",
        ),
        (
            "an unknown commit in an ancestry query",
            req(
                M::GET,
                format!("/repos/r/ancestry?ancestor={c}&descendant={b}"),
            ),
            404,
            "not_found",
        ),
        (
            "unknown team",
            req(M::GET, "/teams/nobody/members"),
            404,
            "not_found",
        ),
        (
            "unknown person",
            req(M::GET, "/persons/nobody/teams"),
            404,
            "not_found",
        ),
        (
            "unknown membership to delete",
            req(M::DELETE, "/teams/core/members/nobody"),
            404,
            "not_found",
        ),
        (
            "bad query value",
            req(M::GET, "/teams/core/members?limit=abc"),
            400,
            "bad_query",
        ),
        (
            "unknown member type",
            req(M::GET, "/teams/core/members?type=robots"),
            400,
            "bad_query",
        ),
        (
            "import with a malformed line",
            req(M::POST, "/import/teams").body(tsv("x\ty\tmember\t\nx\tz\tmember\tsoon\n")),
            400,
            "bad_import",
        ),
        (
            "import with invalid UTF-8",
            req(M::POST, "/import/teams").body(
                [
                    tsv("x\t").into_bytes(),
                    vec![0xff],
                    b"\tmember\t\n".to_vec(),
                ]
                .concat(),
            ),
            400,
            "bad_import",
        ),
        (
            "import without its header",
            req(M::POST, "/import/teams").body("x\ty\tmember\t\n"),
            400,
            "bad_import",
        ),
        (
            "import closing a cycle",
            req(M::POST, "/import/teams").body(tsv("x\ty\tmember\t\ny\tx\tmember\t\n")),
            409,
            "cycle",
        ),
        (
            "import truncated, client gone",
            req(M::POST, "/import/teams").body(truncated()),
            400,
            "bad_body",
        ),
        (
            "package-set import with a bad type",
            req(M::POST, "/import/packagesets").body("set\titem\ttype\ns\tp\tpkg\n"),
            400,
            "bad_import",
        ),
        (
            "bad item type",
            req(M::PUT, "/packagesets/s/items/p?type=robot"),
            400,
            "bad_query",
        ),
        (
            "no credentials",
            req(M::PUT, "/teams/new").credentials(None),
            401,
            "unauthorized",
        ),
        (
            "wrong password",
            req(M::PUT, "/teams/new").credentials(Some(&basic)),
            401,
            "unauthorized",
        ),
        (
            "reads need credentials",
            req(M::GET, "/teams/core/members").credentials(None),
            401,
            "unauthorized",
        ),
        (
            "address outside the allowed ranges",
            req(M::GET, "/teams/core/members").peer(OUTSIDE),
            403,
            "forbidden_address",
        ),
        (
            "unknown route",
            req(M::GET, "/no/such/route"),
            404,
            "no_route",
        ),
        (
            "wrong method",
            req(M::PATCH, "/teams/core"),
            405,
            "method_not_allowed",
        ),
    ];
    let tried = table(&router, rows).await;

    assert_eq!(export(), before, "a refused request changed the graph");
    // Nor the commit graph: the branch and the commits are as pushed, nothing more.
    let (status, _, json) = send(
        &router,
        req(
            M::GET,
            format!("/repos/r/ancestry?ancestor={a}&descendant={b}"),
        ),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["ancestor"], true, "{json}");
    for unknown in [&c, &d] {
        let (status, _, _) = send(
            &router,
            req(
                M::GET,
                format!("/repos/r/ancestry?ancestor={unknown}&descendant={unknown}"),
            ),
        )
        .await;
        assert_eq!(status, 404, "{unknown} was stored by a refused push");
    }
    let (_, _, json) = send(&router, req(M::GET, "/repos/r/branches/main/merged")).await;
    assert_eq!(json["merged"], serde_json::json!([]), "{json}");
    let teams = graphdb::Teams::open(state.store()).unwrap();
    assert!(teams.check().is_clean());
    assert!(graphdb::PackageSets::open(state.store())
        .unwrap()
        .check()
        .is_clean());
    let (status, _, json) = send(
        &router,
        req(M::GET, "/teams/ubuntu/members/alice").peer(LOCAL),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &json["member"]),
        (200, &serde_json::json!(true))
    );
    eprintln!("directory: {tried} bad inputs tried");
}
