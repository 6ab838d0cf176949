//! Transfers that stall mid-body fail (or resume) within the retry budget instead of hanging.
//!
//! A real Swift cannot be made to stall on demand, so the store talks to it through a small TCP
//! relay on loopback that forwards bytes both ways and, when told, stops forwarding one
//! direction after a given number of bytes while keeping every connection open: exactly what a
//! server that hangs mid-transfer looks like from the client. Everything else is the real
//! Swift (native API or S3 API).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blobstore::{Blake3Hash, BlobBackend};
use engine::MemEngine;
use objectstore::{ObjectStoreBackend, ObjectStoreConfig, RetryConfig};

use crate::common::{content, keyspaces, unique_prefix, Protocol};

/// Which way bytes flow through the relay.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// Client to server (request bodies).
    Up,
    /// Server to client (answers).
    Down,
}

#[derive(Debug)]
struct RelayState {
    shutdown: AtomicBool,
    /// Bytes each direction may still forward (`i64::MAX`: no limit).
    up: AtomicI64,
    down: AtomicI64,
}

impl RelayState {
    fn budget(&self, direction: Direction) -> &AtomicI64 {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }
}

/// A TCP relay on `127.0.0.1` to a local port; its threads stop within about a second of
/// `drop`.
struct StallingRelay {
    port: u16,
    state: Arc<RelayState>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl StallingRelay {
    fn start(target: u16) -> StallingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("relay address").port();
        let state = Arc::new(RelayState {
            shutdown: AtomicBool::new(false),
            up: AtomicI64::new(i64::MAX),
            down: AtomicI64::new(i64::MAX),
        });
        let threads = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (state, threads) = (state.clone(), threads.clone());
            std::thread::spawn(move || {
                while !state.shutdown.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                                continue;
                            };
                            for (from, to, direction) in [
                                (&client, &server, Direction::Up),
                                (&server, &client, Direction::Down),
                            ] {
                                let (from, to) = (
                                    from.try_clone().expect("clone"),
                                    to.try_clone().expect("clone"),
                                );
                                let state = state.clone();
                                threads.lock().expect("threads").push(std::thread::spawn(
                                    move || pump(from, to, direction, &state),
                                ));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => return,
                    }
                }
            })
        };
        StallingRelay {
            port,
            state,
            threads,
            acceptor: Some(acceptor),
        }
    }

    /// From now on, forward at most `bytes` more bytes in `direction`, then go silent
    /// (connections stay open; nothing is read any more that way).
    fn stall_after(&self, direction: Direction, bytes: i64) {
        self.state.budget(direction).store(bytes, Ordering::SeqCst);
    }

    /// Forward everything again.
    fn resume(&self) {
        self.state.up.store(i64::MAX, Ordering::SeqCst);
        self.state.down.store(i64::MAX, Ordering::SeqCst);
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.state.shutdown.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for thread in self.threads.lock().expect("threads").drain(..) {
            let _ = thread.join();
        }
    }
}

/// Copies `from` to `to` within the direction's budget; returns when either side closes or the
/// relay shuts down (reads and writes time out, so that the flag is seen within a second).
fn pump(mut from: TcpStream, mut to: TcpStream, direction: Direction, state: &RelayState) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = to.set_write_timeout(Some(Duration::from_secs(1)));
    let mut buf = vec![0u8; 64 << 10];
    while !state.shutdown.load(Ordering::Relaxed) {
        let allowed = state.budget(direction).load(Ordering::SeqCst);
        if allowed <= 0 {
            // Stalled: read nothing, so the sender's buffers fill up and it blocks.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                state
                    .budget(direction)
                    .fetch_sub(n as i64, Ordering::SeqCst);
                let mut written = &buf[..n];
                // Retry timed-out writes until the relay shuts down.
                while !written.is_empty() && !state.shutdown.load(Ordering::Relaxed) {
                    match to.write(written) {
                        Ok(0) => return,
                        Ok(k) => written = &written[k..],
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => {
                            let _ = from.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run under `scripts/with-swift.sh cargo test -p objectstore`")
    })
}

/// The port of an `http://127.0.0.1:PORT/...` URL.
fn port_of(url: &str) -> u16 {
    let rest = url.split("://").nth(1).expect("a URL with a scheme");
    let host_port = rest.split('/').next().expect("host:port");
    host_port
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// The environment's Swift for `protocol`, reached through a new relay, with a short idle
/// timeout and the given retry budget.
fn relayed(
    protocol: Protocol,
    spool: &std::path::Path,
    idle: Duration,
    budget: Duration,
) -> (StallingRelay, ObjectStoreConfig) {
    let (relay, config) = match protocol {
        Protocol::Swift => {
            let auth_url = env("SWIFT_AUTH_URL");
            let port = port_of(&auth_url);
            let relay = StallingRelay::start(port);
            let url = auth_url.replace(&format!(":{port}/"), &format!(":{}/", relay.port));
            let config = ObjectStoreConfig::swift(url, env("SWIFT_USER"), env("SWIFT_KEY"));
            (relay, config)
        }
        Protocol::S3 => {
            let relay = StallingRelay::start(port_of(&format!("{}/", env("S3_ENDPOINT"))));
            let url = format!("http://127.0.0.1:{}", relay.port);
            let config = ObjectStoreConfig::s3(
                url,
                env("S3_REGION"),
                env("S3_ACCESS_KEY"),
                env("S3_SECRET_KEY"),
            );
            (relay, config)
        }
    };
    let config = config
        .container_prefix(unique_prefix())
        .spool_dir(spool)
        .idle_timeout(idle)
        .retry(RetryConfig::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
            budget,
        ));
    (relay, config)
}

fn upload(backend: &ObjectStoreBackend, data: &[u8]) -> blobstore::Result<Blake3Hash> {
    let hash = Blake3Hash::of(data);
    let mut temp = backend.create_temp()?;
    temp.write_all(data)
        .map_err(|e| blobstore::Error::io("writing", "spool", e))?;
    temp.persist(&hash)?;
    Ok(hash)
}

/// Runs `f` on a thread and waits for it at most `limit`: a hang fails the test instead of
/// hanging it. The limit is far above what the call needs; it bounds, it does not measure.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the call was still running after {limit:?}: it hangs"))
}

const GENEROUS: Duration = Duration::from_secs(120);

/// The idle timeout and the retry budget of these tests.
const IDLE: Duration = Duration::from_millis(500);
const BUDGET: Duration = Duration::from_secs(3);
/// What a call may take beyond what the budget allows (the budget stops new attempts; the last
/// attempt still runs until its idle timeout): copying 40 MiB into the spool file and hashing,
/// in a debug build on a loaded 2-core machine, and scheduling delays. Measured well under 1 s
/// on that machine; 4 s is the stated slack, not a measurement.
const SLACK: Duration = Duration::from_secs(4);

/// Fails the test when `elapsed` is past `limit`.
fn assert_within(what: &str, elapsed: Duration, limit: Duration) {
    assert!(
        elapsed < limit,
        "{what} took {elapsed:?}, past its bound of {limit:?} (budget {BUDGET:?}, idle timeout \
         {IDLE:?}, slack {SLACK:?})"
    );
    eprintln!("{what}: {elapsed:?} (bound {limit:?})");
}

fn stalled_upload(protocol: Protocol) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (relay, config) = relayed(protocol, &dir.path().join("spool"), IDLE, BUDGET);
    let backend = ObjectStoreBackend::open(&config, Arc::new(MemEngine::new(&keyspaces())))
        .expect("open the object store");
    // Through the relay, untouched, uploads work (and the container exists).
    let small = content(1, 64 << 10);
    upload(&backend, &small).expect("an upload through the relay");

    // The server stops taking the body 4 MiB into a 40 MiB upload.
    let data = content(2, 40 << 20);
    relay.stall_after(Direction::Up, 4 << 20);
    let stalled = backend.clone();
    let payload = data.clone();
    let started = Instant::now();
    let error = within(GENEROUS, move || upload(&stalled, &payload))
        .expect_err("an upload to a stalled server must fail");
    // Attempts start until the budget is spent; the last one fails after its idle timeout.
    assert_within(
        "the stalled upload",
        started.elapsed(),
        BUDGET + IDLE + SLACK,
    );
    let text = error.to_string();
    assert!(
        objectstore::is_unavailable(&error),
        "a stall is the object store being unavailable: {text}"
    );
    assert!(text.contains("idle timeout"), "the error says why: {text}");
    assert_eq!(
        backend.container_of(&Blake3Hash::of(&data)).unwrap(),
        None,
        "nothing is recorded for a failed upload"
    );

    // The server recovers: the same upload goes through and reads back whole.
    relay.resume();
    let hash = upload(&backend, &data).expect("the upload once the server answers again");
    let mut back = Vec::new();
    backend
        .open_range(&hash, 0, u64::MAX)
        .unwrap()
        .expect("stored")
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "the blob reads back as written");
}

fn stalled_download(protocol: Protocol) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (relay, config) = relayed(protocol, &dir.path().join("spool"), IDLE, BUDGET);
    let backend = ObjectStoreBackend::open(&config, Arc::new(MemEngine::new(&keyspaces())))
        .expect("open the object store");
    let data = Arc::new(content(3, 40 << 20));
    let hash = upload(&backend, &data).expect("an upload through the relay");

    // A stall that outlasts the budget: the read fails, with the reason.
    let mut reader = backend
        .open_range(&hash, 0, u64::MAX)
        .unwrap()
        .expect("stored");
    let mut first = vec![0u8; 1 << 20];
    reader.read_exact(&mut first).expect("the first MiB");
    relay.stall_after(Direction::Down, 2 << 20);
    let started = Instant::now();
    let error = within(GENEROUS, move || {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest)
    })
    .expect_err("a download from a server that stays stalled must fail");
    assert!(
        error.to_string().contains("idle timeout"),
        "the error says why: {error}"
    );
    // The reader stops re-requesting once the budget is spent: at most one idle timeout of the
    // read that noticed the stall, then one of the last re-request, past it.
    assert_within(
        "the stalled download",
        started.elapsed(),
        BUDGET + 2 * IDLE + SLACK,
    );

    // A stall shorter than the budget but longer than the idle timeout: the read resumes
    // from the byte it reached and returns the whole blob.
    relay.resume();
    let mut reader = backend
        .open_range(&hash, 0, u64::MAX)
        .unwrap()
        .expect("stored");
    let mut back = vec![0u8; 1 << 20];
    reader.read_exact(&mut back).expect("the first MiB");
    relay.stall_after(Direction::Down, 2 << 20);
    let relay = Arc::new(relay);
    let resumer = {
        let relay = relay.clone();
        std::thread::spawn(move || {
            // Four idle timeouts: long enough that the reader gives up on its connection.
            std::thread::sleep(Duration::from_secs(2));
            relay.resume();
        })
    };
    let started = Instant::now();
    let back = within(GENEROUS, move || {
        reader.read_to_end(&mut back).map(|_| back)
    })
    .expect("a download resumes once the server answers again");
    assert_within("the resumed download", started.elapsed(), BUDGET + SLACK);
    resumer.join().expect("resumer");
    assert_eq!(back.len(), data.len());
    assert!(back == *data, "the resumed read returns the blob as stored");
}

#[test]
fn swift_a_stalled_upload_fails_within_the_budget_and_records_nothing() {
    stalled_upload(Protocol::Swift);
}

#[test]
fn s3_a_stalled_upload_fails_within_the_budget_and_records_nothing() {
    stalled_upload(Protocol::S3);
}

#[test]
fn swift_a_stalled_download_resumes_or_fails_within_the_budget() {
    stalled_download(Protocol::Swift);
}

#[test]
fn s3_a_stalled_download_resumes_or_fails_within_the_budget() {
    stalled_download(Protocol::S3);
}
