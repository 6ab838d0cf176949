//! The hot reads answered from the socket before hyper (`common/fast_http.rs`), over raw TCP:
//! the router's bytes, pipelining, the hand-off to hyper with what was read, and the limits.

use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// A response read off a raw connection.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// Lower-case names, `date` left out (it moves).
    headers: Vec<(String, String)>,
    body: String,
}

/// One keep-alive connection and the bytes read past the last answer.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(d: &Dir) -> Raw {
        Raw {
            stream: TcpStream::connect(d.addr).await.unwrap(),
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// The next answer; `None` when the server closed the connection first.
    async fn answer(&mut self) -> Option<Answer> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.read).unwrap() {
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .expect("a content-length");
                if self.read.len() >= head + length {
                    let answer = Answer {
                        status: response.code.unwrap(),
                        headers: response
                            .headers
                            .iter()
                            .filter(|h| !h.name.eq_ignore_ascii_case("date"))
                            .map(|h| {
                                let value = String::from_utf8(h.value.to_vec()).unwrap();
                                (h.name.to_ascii_lowercase(), value)
                            })
                            .collect(),
                        body: String::from_utf8(self.read[head..head + length].to_vec()).unwrap(),
                    };
                    assert!(
                        response.headers.iter().any(|h| h.name == "date"),
                        "{answer:?}"
                    );
                    self.read.drain(..head + length);
                    return Some(answer);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.read.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server closes the connection within `within` without another answer.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn get(path: &str, extra: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n{extra}\r\n")
}

/// A directory with `core` ⊂ `ubuntu`, alice in core.
async fn teams(access: Access) -> Dir {
    let d = Dir::memory(access).await;
    for team in ["ubuntu", "core"] {
        assert_eq!(d.put(&format!("/teams/{team}"), None).await.status(), 200);
    }
    let member = Some(json!({"role": "member"}));
    assert_eq!(
        d.put("/teams/ubuntu/members/core", member.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        d.put("/teams/core/members/alice", member).await.status(),
        200
    );
    d
}

async fn teams_with_limits(limits: servers::common::Limits) -> Dir {
    teams(Access {
        limits,
        ..Access::default()
    })
    .await
}

const HOT: [&str; 5] = [
    "/teams/ubuntu/members/alice",
    "/teams/ubuntu/members/nobody",
    "/persons/alice/teams",
    "/teams/ubuntu/members?type=person",
    "/teams/nosuch/members",
];

#[tokio::test]
async fn hot_reads_answer_the_routers_bytes() {
    let d = teams(Access::default()).await;
    for path in HOT {
        // `X-Min-Revision` sends a request to the router (its middleware waits for revisions).
        let mut routed = Raw::connect(&d).await;
        routed.send(&get(path, "X-Min-Revision: 0\r\n")).await;
        let by_router = routed.answer().await.unwrap();
        let mut fast = Raw::connect(&d).await;
        fast.send(&get(path, "")).await;
        let answered = fast.answer().await.unwrap();
        assert_eq!(answered, by_router, "{path}");
        // `Connection: close` (HAProxy's `http-server-close` sends it): answered, then closed,
        // as the router's hyper does.
        let mut routed = Raw::connect(&d).await;
        routed
            .send(&get(path, "X-Min-Revision: 0\r\nConnection: close\r\n"))
            .await;
        let by_router = routed.answer().await.unwrap();
        assert!(routed.closed_within(Duration::from_secs(2)).await, "{path}");
        let mut fast = Raw::connect(&d).await;
        fast.send(&get(path, "Connection: close\r\n")).await;
        assert_eq!(fast.answer().await.unwrap(), by_router, "{path}");
        assert!(fast.closed_within(Duration::from_secs(2)).await, "{path}");
    }
    let mut raw = Raw::connect(&d).await;
    raw.send(&get("/teams/ubuntu/members/alice", "")).await;
    let answer = raw.answer().await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        r#"{"member":true,"path":["alice","core","ubuntu"]}"#
    );
    assert_eq!(
        answer.headers,
        [
            ("content-type".to_string(), "application/json".to_string()),
            ("content-length".to_string(), answer.body.len().to_string()),
        ]
    );
    d.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_off() {
    let d = teams(Access::default()).await;
    assert_eq!(d.put("/persons/bob", None).await.status(), 200);
    let mut raw = Raw::connect(&d).await;
    // Two hot reads, then requests for the router (a write with a body, a health check),
    // then a hot read again: one write, answered in order on one connection.
    let body = r#"{"role":"member"}"#;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let put = format!(
        "PUT /teams/core/members/bob HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let all = [
        get("/teams/ubuntu/members/alice", ""),
        get("/teams/ubuntu/members/bob", ""),
        put,
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        get("/teams/ubuntu/members/bob", ""),
    ]
    .concat();
    raw.send(&all).await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let answer = raw.answer().await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        bodies.push(answer.body);
    }
    assert!(bodies[0].starts_with(r#"{"member":true"#), "{bodies:?}");
    assert!(bodies[1].starts_with(r#"{"member":false"#), "{bodies:?}");
    assert!(bodies[2].contains("revision"), "{bodies:?}");
    assert!(bodies[3].contains(r#""status":"ok""#), "{bodies:?}");
    assert!(bodies[4].starts_with(r#"{"member":true"#), "{bodies:?}");
    // A head split over writes, and a request split from the next one's first bytes.
    let request = get("/persons/alice/teams", "");
    let (first, rest) = request.split_at(10);
    raw.send(first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&format!("{rest}{}", &request[..7])).await;
    let answer = raw.answer().await.unwrap();
    assert_eq!(answer.body, r#"{"teams":["core","ubuntu"],"next":null}"#);
    raw.send(&request[7..]).await;
    assert_eq!(raw.answer().await.unwrap().body, answer.body);
    d.stop().await;
}

#[tokio::test]
async fn refusals_and_odd_requests_are_the_routers() {
    let d = teams(Access::default()).await;
    // No credentials: the router's 401 with its challenge.
    let mut raw = Raw::connect(&d).await;
    raw.send("GET /teams/ubuntu/members/alice HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let refused = raw.answer().await.unwrap();
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .headers
            .iter()
            .any(|(name, _)| name == "www-authenticate"),
        "{refused:?}"
    );
    // A head longer than the limit: hyper's 431.
    let mut raw = Raw::connect(&d).await;
    let long = format!("X-Filler: {}\r\n", "a".repeat(20 << 10));
    raw.send(&get("/teams/ubuntu/members/alice", &long)).await;
    assert_eq!(raw.answer().await.unwrap().status, 431);
    // HTTP/1.0 and HEAD go to hyper, which answers them as before.
    let mut raw = Raw::connect(&d).await;
    raw.send(&get("/persons/alice/teams", "").replace("HTTP/1.1", "HTTP/1.0"))
        .await;
    let old = raw.answer().await.unwrap();
    assert_eq!(old.status, 200);
    assert_eq!(old.body, r#"{"teams":["core","ubuntu"],"next":null}"#);
    // Garbage: hyper's 400.
    let mut raw = Raw::connect(&d).await;
    raw.send("GET /a b c\r\n\r\n").await;
    assert!(matches!(
        raw.answer().await,
        Some(Answer { status: 400, .. }) | None
    ));
    d.stop().await;
}

#[tokio::test]
async fn idle_connections_and_slow_heads_are_closed() {
    let d = teams_with_limits(servers::common::Limits {
        header_read_timeout_secs: 1,
        idle_timeout_secs: 2,
        ..servers::common::Limits::default()
    })
    .await;
    // A head that stops half way: closed after the head's limit, not the idle one.
    let mut slow = Raw::connect(&d).await;
    let started = Instant::now();
    slow.send("GET /persons/alice/teams HTTP/1.1\r\nHo").await;
    assert!(slow.closed_within(Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "{took:?}"
    );
    // A head trickled a byte at a time is closed as well, however steady the trickle.
    let mut trickle = Raw::connect(&d).await;
    let started = Instant::now();
    let request = get("/persons/alice/teams", &"X-Pad: y\r\n".repeat(40));
    for byte in request.as_bytes()[..request.len() - 2].chunks(1) {
        if trickle.stream.write_all(byte).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(trickle.closed_within(Duration::from_secs(3)).await);
    assert!(started.elapsed() < Duration::from_secs(4));
    // After an answer, an idle connection lasts the idle limit.
    let mut idle = Raw::connect(&d).await;
    idle.send(&get("/persons/alice/teams", "")).await;
    assert_eq!(idle.answer().await.unwrap().status, 200);
    let started = Instant::now();
    assert!(!idle.closed_within(Duration::from_millis(1500)).await);
    assert!(idle.closed_within(Duration::from_secs(3)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    d.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_idle_limit() {
    let limits = servers::common::Limits {
        idle_timeout_secs: 2,
        ..servers::common::Limits::default()
    };
    let d = teams_with_limits(limits.clone()).await;
    // Far more answers than the sockets' buffers hold, asked for and never read: the
    // server's writes stall, and it must give the connection up after 2 s without progress.
    stalled_reader_is_dropped(&d, &get("/teams/ubuntu/members/alice", ""), 400_000).await;
    d.stop().await;
    // The same for a large answer sent from its sealed file.
    let (d, list) = large_team(limits).await;
    stalled_reader_is_dropped(&d, &get(&list, ""), 2_000).await;
    d.stop().await;
}

/// Sends `requests` copies of `request` on one connection without reading, then reads what
/// the server wrote: some answers, not all, then the end of the stream within 20 s.
async fn stalled_reader_is_dropped(d: &Dir, request: &str, requests: usize) {
    let raw = Raw::connect(d).await;
    let (mut reader, mut writer) = raw.stream.into_split();
    let batch = request.repeat(1_000);
    let sending = tokio::spawn(async move {
        for _ in 0..requests / 1_000 {
            if writer.write_all(batch.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Whatever the server wrote before it gave up, then the end of the stream.
    let mut answers = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    // The last 8 bytes of the chunk before, so that a status line cut between two reads
    // is counted once.
    let mut carry = Vec::new();
    let read_all = async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    carry.extend_from_slice(&chunk[..n]);
                    answers += carry.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
                    carry.drain(..carry.len().saturating_sub(8));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the server kept the stalled connection open");
    assert!(answers > 0 && answers < requests, "{answers} answers");
    sending.abort();
}

/// A directory holding a generated graph (a twentieth of production's shape), and the path
/// of its largest team's whole member list: an answer large enough to be kept sealed.
async fn large_team(limits: servers::common::Limits) -> (Dir, String) {
    let d = Dir::memory(Access {
        limits,
        ..Access::default()
    })
    .await;
    let g = Generated::new(&Shape::scaled(20));
    let r = import(&d, "/import/teams", g.to_tsv()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let list = format!("/teams/{}/members", g.teams[g.special_roots[0]]);
    (d, list)
}

/// The whole list of a large team, kept and sent from its sealed file with `sendfile`, has
/// the router's bytes, pipelined between small answers and sent in parts.
#[tokio::test]
async fn large_kept_answers_have_the_routers_bytes_in_order() {
    let (d, list) = large_team(servers::common::Limits::default()).await;
    let mut routed = Raw::connect(&d).await;
    routed.send(&get(&list, "X-Min-Revision: 0\r\n")).await;
    let by_router = routed.answer().await.unwrap();
    assert_eq!(by_router.status, 200);
    // Large enough to be kept sealed (answers.rs, `SEAL_FROM`).
    assert!(by_router.body.len() > 16 << 10, "{}", by_router.body.len());
    // 400 answers asked for at once and read only after a pause: more than the sockets'
    // buffers hold, so that the server's sends stop part way and resume.
    let small = get("/teams/nosuch/members/nobody", "");
    let mut raw = Raw::connect(&d).await;
    raw.send(&[get(&list, ""), small].concat().repeat(400))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..400 {
        assert_eq!(raw.answer().await.unwrap(), by_router);
        assert_eq!(raw.answer().await.unwrap().status, 404);
    }
    d.stop().await;
}

#[tokio::test]
async fn stopping_closes_idle_keep_alive_connections() {
    let d = teams(Access::default()).await;
    let mut raw = Raw::connect(&d).await;
    raw.send(&get("/teams/ubuntu/members/alice", "")).await;
    assert_eq!(raw.answer().await.unwrap().status, 200);
    let started = Instant::now();
    // The server's graceful stop ends; the default grace is 30 s, the idle limit 60.
    d.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(raw.closed_within(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn answers_from_the_socket_are_counted_in_the_metrics() {
    let d = teams(Access::default()).await;
    let count = || async {
        let text = crate::support::get_text(&d.url("/metrics")).await;
        text.lines()
            .filter(|line| {
                line.starts_with("directory_http_requests_total{")
                    && line.contains(r#"route="/teams/{team}/members/{member}""#)
                    && line.contains(r#"status="200""#)
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let before = count().await;
    let mut raw = Raw::connect(&d).await;
    for _ in 0..3 {
        raw.send(&get("/teams/ubuntu/members/alice", "")).await;
        assert_eq!(raw.answer().await.unwrap().status, 200);
    }
    assert_eq!(count().await, before + 3);
    d.stop().await;
}

#[tokio::test]
async fn forwarded_clients_are_checked_as_the_router_checks_them() {
    // Loopback is allowed (the default) and 127.0.0.1 is a trusted proxy: the client is the
    // rightmost untrusted address of `X-Forwarded-For`.
    let d = teams(Access {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Access::default()
    })
    .await;
    let path = "/teams/ubuntu/members/alice";
    for (forwarded, status) in [
        ("127.0.0.2", 200),
        ("192.168.7.7, 127.0.0.2", 200),
        ("127.0.0.2, 192.168.7.7", 403),
        ("not an address", 400),
    ] {
        let header = format!("X-Forwarded-For: {forwarded}\r\n");
        let mut routed = Raw::connect(&d).await;
        routed
            .send(&get(path, &format!("X-Min-Revision: 0\r\n{header}")))
            .await;
        let by_router = routed.answer().await.unwrap();
        assert_eq!(by_router.status, status, "{forwarded}: {by_router:?}");
        let mut fast = Raw::connect(&d).await;
        fast.send(&get(path, &header)).await;
        assert_eq!(fast.answer().await.unwrap(), by_router, "{forwarded}");
    }
    d.stop().await;
}
