//! The librarian behind a real HAProxy (Debian's `haproxy`, installed by `make setup`): the
//! address allowlist sees the real client, told by `X-Forwarded-For` (`option forwardfor`)
//! or by the PROXY protocol v2 header (`send-proxy-v2`), and only when the connection comes
//! from a trusted proxy.
//!
//! Every address is on loopback: the server allows writers from 127.0.0.2 only and trusts
//! 127.0.0.1, the address HAProxy connects from; clients bind 127.0.0.2 (allowed) or
//! 127.0.0.3 (not allowed) as their source.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Options, TestServer, PASSWORD, USER};

const ALLOWED: &str = "127.0.0.2";
const REFUSED: &str = "127.0.0.3";

struct HaProxy {
    child: Child,
    forwardfor: SocketAddr,
    proxy_v2: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy with one frontend per mode in front of `backend`.
    fn start(backend: SocketAddr) -> HaProxy {
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("haproxy is not installed: `make setup` installs Debian's haproxy");
        let forwardfor = free_port();
        let proxy_v2 = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
                 timeout server 30s\n\
                 frontend forwardfor\n  bind {forwardfor}\n  option forwardfor\n  \
                 default_backend plain\n\
                 frontend proxy_v2\n  bind {proxy_v2}\n  default_backend proxied\n\
                 backend plain\n  server librarian {backend}\n\
                 backend proxied\n  server librarian {backend} send-proxy-v2\n"
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy");
        let proxy = HaProxy {
            child,
            forwardfor,
            proxy_v2,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(forwardfor).is_err() || TcpStream::connect(proxy_v2).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Uploads through `via` from `source`, with an optional `X-Forwarded-For` of the client's
/// own: the status and the error code.
async fn upload(via: SocketAddr, source: &str, forged: Option<&str>) -> (u16, String) {
    let mut request = client_from(source)
        .post(format!("http://{via}/buckets/proxied/files?filename=a.txt"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/plain")
        .body(format!("from {source}"));
    if let Some(forged) = forged {
        request = request.header("x-forwarded-for", forged);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

async fn server() -> TestServer {
    TestServer::start(Options {
        allowed: vec![format!("{ALLOWED}/32").parse().unwrap()],
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn the_allowlist_sees_the_client_behind_haproxy_in_both_modes() {
    let server = server().await;
    let haproxy = HaProxy::start(server.addr);
    for (mode, via) in [
        ("forwardfor", haproxy.forwardfor),
        ("send-proxy-v2", haproxy.proxy_v2),
    ] {
        assert_eq!(
            upload(via, ALLOWED, None).await,
            (201, String::new()),
            "{mode}"
        );
        assert_eq!(
            upload(via, REFUSED, None).await,
            (403, "forbidden_address".to_owned()),
            "{mode}: the proxy's own trusted address must not let the client through"
        );
    }
    // A client cannot pass itself off as another through HAProxy: forwardfor appends the
    // address it saw, and the rightmost untrusted entry wins.
    assert_eq!(
        upload(haproxy.forwardfor, REFUSED, Some(ALLOWED)).await,
        (403, "forbidden_address".to_owned())
    );
    // A list that a trusted proxy passes on malformed is refused.
    assert_eq!(
        upload(haproxy.forwardfor, ALLOWED, Some("not-an-address")).await,
        (400, "bad_forwarded_for".to_owned())
    );
    drop(haproxy);
    server.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let server = server().await;
    // Straight to the server: the peer is the client, whatever it claims.
    assert_eq!(
        upload(server.addr, REFUSED, Some(ALLOWED)).await,
        (403, "forbidden_address".to_owned())
    );
    assert_eq!(
        upload(server.addr, ALLOWED, Some("not-an-address")).await,
        (201, String::new())
    );
    server.stop().await;
}

/// Sends `header` then a GET on a raw connection from `source`; returns what came back.
fn raw_exchange(server: SocketAddr, header: &[u8]) -> String {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(header).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[tokio::test]
async fn proxy_headers_are_parsed_or_refused() {
    let server = server().await;
    let addr = server.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let mut good = servers::common::proxy::SIGNATURE.to_vec();
        // Version 2, PROXY; TCP over IPv4; 12 bytes: 127.0.0.2:4711 -> 127.0.0.1:80.
        good.extend_from_slice(&[
            0x21, 0x11, 0, 12, 127, 0, 0, 2, 127, 0, 0, 1, 0x12, 0x67, 0, 80,
        ]);
        let mut bad = servers::common::proxy::SIGNATURE.to_vec();
        // Version 1 in a v2 header.
        bad.extend_from_slice(&[
            0x11, 0x11, 0, 12, 127, 0, 0, 2, 127, 0, 0, 1, 0x12, 0x67, 0, 80,
        ]);
        (raw_exchange(addr, &good), raw_exchange(addr, &bad))
    })
    .await
    .unwrap();
    assert!(answers.0.starts_with("HTTP/1.1 200"), "{}", answers.0);
    assert!(answers.1.starts_with("HTTP/1.1 400"), "{}", answers.1);
    assert!(answers.1.contains("bad_proxy_header"), "{}", answers.1);
    server.stop().await;
}
