//! The change feed's figures of issue 15 against a running server (benches/servers/feed-watch.sh
//! starts one, release build, on loopback):
//!
//! 1. **latency**: `--writes` writes one after another; a long-polling watcher
//!    (`GET /changes?after=N&wait=30`) and an event-stream reader (`Accept:
//!    text/event-stream`) note when each revision reaches them. The figure is the time from the
//!    write's acknowledgement (its answer, with `X-Revision`, read by the writer) to the
//!    watcher's answer or the stream's record, p50/p99/max over every write; a revision that
//!    reached a watcher before its writer read the acknowledgement counts as 0.
//! 2. **memory**: the server's VmRSS before, with `--conns` long polls parked, and with
//!    `--conns` event streams open (each stream's headers received); one write then releases
//!    the polls and reaches every stream, and the program checks that each one saw it.
//! 3. **rate** (`--rate-secs`, 0 to skip): writes per second from `--writers` concurrent
//!    writers, to compare a server with and without the feed (`--bench-no-change-feed`).
//!
//! ```text
//! feed_watch --server librarian --url http://127.0.0.1:28090 --pid PID [--writes 1000]
//!            [--conns 1000] [--rate-secs 10] [--writers 16] [--only rate]
//! ```
//!
//! Loopback only; everything is bounded in time (a watcher that misses an event fails the run
//! after 30 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which server, and so which write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// `POST /buckets/feed/files?filename=...` with a 64-byte body.
    Librarian,
    /// `PUT /teams/feed-tN/members/feed-pN` with `{"role":"member"}`.
    Directory,
}

#[derive(Debug)]
struct Args {
    server: Server,
    url: String,
    pid: u32,
    writes: usize,
    conns: usize,
    rate_secs: u64,
    writers: usize,
    only_rate: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        server: Server::Librarian,
        url: String::new(),
        pid: 0,
        writes: 1000,
        conns: 1000,
        rate_secs: 10,
        writers: 16,
        only_rate: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => {
                args.server = match value()?.as_str() {
                    "librarian" => Server::Librarian,
                    "directory" => Server::Directory,
                    other => bail!("--server is librarian or directory, not {other}"),
                }
            }
            "--url" => args.url = value()?,
            "--pid" => args.pid = value()?.parse()?,
            "--writes" => args.writes = value()?.parse()?,
            "--conns" => args.conns = value()?.parse()?,
            "--rate-secs" => args.rate_secs = value()?.parse()?,
            "--writers" => args.writers = value()?.parse()?,
            "--only" => {
                ensure!(value()? == "rate", "--only takes rate");
                args.only_rate = true;
            }
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        args.url.starts_with("http://127.0.0.1:"),
        "--url must be http://127.0.0.1:PORT (loopback only)"
    );
    ensure!(args.pid != 0, "--pid (the server's) is required");
    Ok(args)
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?)
}

/// Does write `n` and answers its revision.
async fn write(client: &reqwest::Client, args: &Args, n: u64) -> Result<u64> {
    let request = match args.server {
        Server::Librarian => client
            .post(format!("{}/buckets/feed/files?filename=w{n:012}", args.url))
            .header("Content-Type", "application/octet-stream")
            .body(format!("{n:064}")),
        Server::Directory => client
            .put(format!(
                "{}/teams/feed-t{}/members/feed-p{n}",
                args.url,
                n % 64
            ))
            .header("Content-Type", "application/json")
            .body(r#"{"role":"member"}"#),
    };
    let response = request.send().await?;
    let status = response.status();
    let revision = response
        .headers()
        .get("x-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.bytes().await?;
    ensure!(
        status.is_success(),
        "write {n}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    revision.with_context(|| format!("write {n}: no X-Revision"))
}

async fn head(client: &reqwest::Client, url: &str) -> Result<u64> {
    let page: serde_json::Value = client
        .get(format!("{url}/changes?limit=1"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    page["head"].as_u64().context("no head in /changes")
}

/// When each revision reached a watcher.
type Seen = Arc<Mutex<HashMap<u64, Instant>>>;

fn note(seen: &Seen, revision: u64) {
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(revision)
        .or_insert_with(Instant::now);
}

async fn long_poller(url: String, mut after: u64, seen: Seen, stop: Arc<AtomicBool>) -> Result<()> {
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let page: serde_json::Value = client
            .get(format!("{url}/changes?after={after}&wait=30&limit=1000"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let now = Instant::now();
        for event in page["changes"].as_array().into_iter().flatten() {
            if let Some(revision) = event["revision"].as_u64() {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(revision)
                    .or_insert(now);
            }
        }
        after = page["next"].as_u64().context("no next")?;
    }
    Ok(())
}

async fn stream_reader(url: String, after: u64, seen: Seen, stop: Arc<AtomicBool>) -> Result<()> {
    let client = reqwest::Client::new();
    let mut response = client
        .get(format!("{url}/changes?after={after}"))
        .header("Accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let mut pending = String::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(chunk) = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await
        else {
            continue;
        };
        let Some(chunk) = chunk? else { break };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            if let Some(id) = pending[..end].strip_prefix("id: ") {
                note(&seen, id.trim().parse()?);
            }
            pending.drain(..=end);
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, acks: &[(u64, Instant)], seen: &Seen) -> Result<()> {
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let mut early = 0;
    let mut latencies = Vec::with_capacity(acks.len());
    for (revision, acked) in acks {
        let at = seen
            .get(revision)
            .with_context(|| format!("{what}: revision {revision} never arrived"))?;
        if at < acked {
            early += 1;
        }
        latencies.push(at.saturating_duration_since(*acked));
    }
    latencies.sort();
    println!(
        "{what}: samples {}, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({early} arrived before the writer read its acknowledgement)",
        latencies.len(),
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    Ok(())
}

async fn latency(args: &Args, client: &reqwest::Client, next: &AtomicU64) -> Result<()> {
    let start = head(client, &args.url).await?;
    let polled: Seen = Arc::default();
    let streamed: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(long_poller(
        args.url.clone(),
        start,
        Arc::clone(&polled),
        Arc::clone(&stop),
    ));
    let reader = tokio::spawn(stream_reader(
        args.url.clone(),
        start,
        Arc::clone(&streamed),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acks = Vec::with_capacity(args.writes);
    let mut write_times = Vec::with_capacity(args.writes);
    for _ in 0..args.writes {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let revision = write(client, args, n).await?;
        let acked = Instant::now();
        acks.push((revision, acked));
        write_times.push(acked - sent);
        // Lets the long poller read its answer and park its next request.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let last = acks.last().map_or(start, |(r, _)| *r);
    let deadline = Instant::now() + Duration::from_secs(30);
    for seen in [&polled, &streamed] {
        while !seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&last)
        {
            ensure!(
                Instant::now() < deadline,
                "a watcher missed revision {last}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.await??;
    // The poller is parked in a 30-second wait: one more write ends it.
    write(client, args, next.fetch_add(1, Ordering::Relaxed)).await?;
    poller.await??;
    write_times.sort();
    println!(
        "## latency: {} writes one at a time (write p50 {:.3} ms, p99 {:.3} ms)",
        args.writes,
        percentile(&write_times, 50.0).as_secs_f64() * 1e3,
        percentile(&write_times, 99.0).as_secs_f64() * 1e3,
    );
    report("long poll (wait=30)", &acks, &polled)?;
    report("event stream", &acks, &streamed)?;
    Ok(())
}

/// Opens a connection and sends `GET path` with `accept`; for an event stream, also reads the
/// answer's headers (the stream is open then).
async fn open_request(addr: &str, path: &str, stream: bool) -> Result<TcpStream> {
    let mut socket = TcpStream::connect(addr).await?;
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n").as_bytes(),
        )
        .await?;
    if stream {
        let head = read_some(&mut socket, b"\r\n\r\n").await?;
        ensure!(head.starts_with("HTTP/1.1 200"), "stream answered {head}");
    }
    Ok(socket)
}

/// Reads until `marker` has arrived (within 30 s); answers what was read.
async fn read_some(socket: &mut TcpStream, marker: &[u8]) -> Result<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !buffer.windows(marker.len()).any(|w| w == marker) {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .context("no answer within 30 s")??;
        ensure!(n > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}

async fn open_all(args: &Args, path: &str, stream: bool) -> Result<Vec<TcpStream>> {
    let addr = args.url.trim_start_matches("http://").to_owned();
    let mut tasks = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let (addr, path) = (addr.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            open_request(&addr, &path, stream).await
        }));
    }
    let mut sockets = Vec::with_capacity(args.conns);
    for task in tasks {
        sockets.push(task.await??);
    }
    Ok(sockets)
}

/// Waits until every socket has received `marker` (the released poll's answer, the stream's
/// record of the new revision); fails otherwise.
async fn all_receive(sockets: Vec<TcpStream>, marker: String) -> Result<usize> {
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let marker = marker.clone();
            tokio::spawn(async move { read_some(&mut socket, marker.as_bytes()).await })
        })
        .collect();
    let mut received = 0;
    for task in tasks {
        task.await??;
        received += 1;
    }
    Ok(received)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn memory(args: &Args, client: &reqwest::Client, next: &AtomicU64) -> Result<()> {
    println!("## memory: {} concurrent connections", args.conns);
    let settle = || tokio::time::sleep(Duration::from_secs(2));
    settle().await;
    let before = rss_kib(args.pid)?;
    println!("VmRSS before: {:.1} MiB", mib(before));

    let head = head(client, &args.url).await?;
    let polls = open_all(args, &format!("/changes?after={head}&wait=60"), false).await?;
    settle().await;
    let with_polls = rss_kib(args.pid)?;
    let revision = write(client, args, next.fetch_add(1, Ordering::Relaxed)).await?;
    let released = all_receive(polls, format!("\"revision\":{revision}")).await?;
    println!(
        "VmRSS with {} long polls: {:.1} MiB (+{:.1} MiB); {released} answered with the next write",
        args.conns,
        mib(with_polls),
        mib(with_polls.saturating_sub(before)),
    );

    settle().await;
    let before_streams = rss_kib(args.pid)?;
    let head = self::head(client, &args.url).await?;
    let streams = open_all(args, &format!("/changes?after={head}"), true).await?;
    settle().await;
    let with_streams = rss_kib(args.pid)?;
    let revision = write(client, args, next.fetch_add(1, Ordering::Relaxed)).await?;
    let received = all_receive(streams, format!("id: {revision}\n")).await?;
    // The allocator keeps what the polls freed, and the streams reuse it: both differences
    // are shown, the one over the first figure being the upper bound.
    println!(
        "VmRSS with {} event streams: {:.1} MiB (+{:.1} MiB over {:.1} MiB just before them, +{:.1} MiB over the first figure); {received} received the next write",
        args.conns,
        mib(with_streams),
        mib(with_streams.saturating_sub(before_streams)),
        mib(before_streams),
        mib(with_streams.saturating_sub(before)),
    );
    settle().await;
    println!("VmRSS after: {:.1} MiB", mib(rss_kib(args.pid)?));
    Ok(())
}

async fn rate(args: &Args, next: &Arc<AtomicU64>) -> Result<()> {
    let client = reqwest::Client::new();
    let args = Arc::new(Args {
        url: args.url.clone(),
        ..*args
    });
    let deadline = Instant::now() + Duration::from_secs(args.rate_secs);
    let tasks: Vec<_> = (0..args.writers)
        .map(|_| {
            let (client, args, next) = (client.clone(), Arc::clone(&args), Arc::clone(next));
            tokio::spawn(async move {
                let mut done = 0_u64;
                while Instant::now() < deadline {
                    write(&client, &args, next.fetch_add(1, Ordering::Relaxed)).await?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    println!(
        "## rate: {total} writes from {} writers in {} s: {:.0} writes/s",
        args.writers,
        args.rate_secs,
        total as f64 / args.rate_secs as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let client = reqwest::Client::new();
    // Write names unique across runs against the same data directory.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        * 1_000_000;
    let next = Arc::new(AtomicU64::new(epoch));
    if !args.only_rate {
        latency(&args, &client, &next).await?;
        memory(&args, &client, &next).await?;
    }
    if args.rate_secs > 0 {
        rate(&args, &next).await?;
    }
    Ok(())
}
