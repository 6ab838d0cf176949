//! Leadership on PostgreSQL: leases with fencing epochs (`engine::Leadership`). Two engines
//! contend for a lease; a leader that stops renewing, one whose writers are in flight during
//! the takeover, and a child process SIGSTOPped while writing have every later batch refused
//! with `Error::Fenced`, never committed after the takeover; release hands over at once; the
//! epoch only grows. Each test skips itself (and says so) without `LPSTORE_TEST_POSTGRES`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use engine::testing::{skip, PgScratch};
use engine::{Backend, Durability, Engine, EngineConfig, Epoch, Error, PostgresConfig, WriteBatch};

use crate::harness::KEYSPACES;

const LEASE: &str = "writer";

fn open(scratch: &PgScratch) -> Arc<dyn Engine> {
    scratch.config().open(KEYSPACES).unwrap()
}

/// Batch `n`: key `n` in `alpha`, and one more on the counter `batches` in `beta`.
pub(crate) fn batch(engine: &dyn Engine, n: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(
        engine.keyspace("alpha").unwrap(),
        n.to_be_bytes(),
        b"written",
    );
    batch.counter_add(engine.keyspace("beta").unwrap(), b"batches", 1);
    batch
}

pub(crate) fn present(engine: &dyn Engine, n: u64) -> bool {
    engine
        .get(engine.keyspace("alpha").unwrap(), &n.to_be_bytes())
        .unwrap()
        .is_some()
}

pub(crate) fn count(engine: &dyn Engine) -> i64 {
    engine
        .counter(engine.keyspace("beta").unwrap(), b"batches")
        .unwrap()
}

/// Acquires `LEASE` for `holder`, trying every 50 ms for up to 30 s.
fn acquire_until(engine: &dyn Engine, holder: &str, ttl: Duration) -> Epoch {
    let leadership = engine.leadership().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(epoch) = leadership.acquire(LEASE, holder, ttl).unwrap() {
            return epoch;
        }
        assert!(Instant::now() < deadline, "{holder} never got the lease");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn embedded_backends_have_no_leases() {
    let engine = EngineConfig::memory().open(KEYSPACES).unwrap();
    assert!(engine.leadership().is_none());
}

#[test]
fn two_engines_contend_and_the_epoch_only_grows() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let a = open(&scratch);
    let b = open(&scratch);
    let (la, lb) = (a.leadership().unwrap(), b.leadership().unwrap());
    let long = Duration::from_secs(60);

    let first = la.acquire(LEASE, "a", long).unwrap().unwrap();
    assert_eq!(
        lb.acquire(LEASE, "b", long).unwrap(),
        None,
        "a's lease is live"
    );
    assert_eq!(
        la.acquire(LEASE, "a", long).unwrap(),
        Some(first),
        "its own live lease: a renewal, same epoch"
    );
    assert!(la.renew(LEASE, "a", first, long).unwrap());
    assert!(!lb.renew(LEASE, "b", first, long).unwrap(), "not b's lease");
    // Another name is another lease.
    assert!(lb.acquire("other", "b", long).unwrap().is_some());

    // Release hands over at once, long before the 60 s expiry.
    la.release(LEASE, "a", first).unwrap();
    let started = Instant::now();
    let second = lb.acquire(LEASE, "b", long).unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(second > first, "{second} after {first}");
    assert!(
        !la.renew(LEASE, "a", first, long).unwrap(),
        "a's epoch moved"
    );
    assert_eq!(la.acquire(LEASE, "a", long).unwrap(), None);

    // Expiry (in the database's clock) hands over too; every takeover takes the next epoch.
    let mut epochs = vec![first, second];
    let short = Duration::from_millis(200);
    assert_eq!(lb.acquire(LEASE, "b", short).unwrap(), Some(second));
    for round in 0..4 {
        let (engine, holder) = if round % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let epoch = acquire_until(&**engine, holder, short);
        assert!(epoch > *epochs.last().unwrap(), "{epochs:?} then {epoch}");
        epochs.push(epoch);
    }
    // A holder taking its own lease again after it expired gets a new epoch as well.
    let last = *epochs.last().unwrap();
    thread::sleep(Duration::from_millis(400));
    let again = b.leadership().unwrap().acquire(LEASE, "b", short).unwrap();
    assert!(again.is_some_and(|epoch| epoch > last), "{again:?}");
}

#[test]
fn a_leader_that_stopped_renewing_is_refused_after_a_takeover() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let a = open(&scratch);
    let b = open(&scratch);
    let ttl = Duration::from_millis(300);
    let epoch_a = acquire_until(&*a, "a", ttl);
    a.leadership().unwrap().fence(LEASE, epoch_a);
    a.write(batch(&*a, 1), Durability::Sync).unwrap();

    // `a` stops renewing (paused, partitioned); `b` takes over once the lease expired.
    let epoch_b = acquire_until(&*b, "b", ttl);
    assert!(epoch_b > epoch_a);
    b.leadership().unwrap().fence(LEASE, epoch_b);

    for durability in [Durability::Sync, Durability::Buffered] {
        let refused = a.write(batch(&*a, 2), durability).unwrap_err();
        assert!(
            matches!(
                &refused,
                Error::Fenced { name, epoch, current }
                    if name == LEASE && *epoch == epoch_a.0 && *current == Some(epoch_b.0)
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("no longer the writer"),
            "{refused}"
        );
    }
    assert!(!present(&*b, 2), "a refused batch applied nothing");
    // Not poisoned: `a` reads, flushes (an empty batch needs no fence), and writes again
    // once it leads again.
    assert_eq!(count(&*a), 1);
    a.flush().unwrap();
    b.write(batch(&*b, 3), Durability::Sync).unwrap();
    b.leadership()
        .unwrap()
        .release(LEASE, "b", epoch_b)
        .unwrap();
    let epoch_a2 = acquire_until(&*a, "a", ttl);
    assert!(epoch_a2 > epoch_b);
    a.leadership().unwrap().fence(LEASE, epoch_a2);
    a.write(batch(&*a, 4), Durability::Sync).unwrap();
    assert!(matches!(
        b.write(batch(&*b, 5), Durability::Sync),
        Err(Error::Fenced { .. })
    ));
    assert!(present(&*b, 1) && !present(&*b, 2) && present(&*b, 3) && present(&*b, 4));
    assert!(!present(&*b, 5));
    assert_eq!(count(&*b), 3);
}

#[test]
fn batches_in_flight_during_a_takeover_commit_before_it_or_are_refused() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let a = open(&scratch);
    let b = open(&scratch);
    let ttl = Duration::from_millis(300);
    let epoch_a = acquire_until(&*a, "a", ttl);
    a.leadership().unwrap().fence(LEASE, epoch_a);

    // Four writers of `a` write without pause; `a` never renews.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (a, stop, next) = (Arc::clone(&a), Arc::clone(&stop), Arc::clone(&next));
            let (acknowledged, refused) = (Arc::clone(&acknowledged), Arc::clone(&refused));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    match a.write(batch(&*a, n), Durability::Sync) {
                        Ok(()) => acknowledged.lock().unwrap().insert(n),
                        Err(Error::Fenced { .. }) => refused.lock().unwrap().insert(n),
                        Err(other) => panic!("batch {n}: {other}"),
                    };
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let epoch_b = acquire_until(&*b, "b", ttl);
    assert!(epoch_b > epoch_a);
    // Right after the takeover committed: whatever `a` committed is there now, and nothing
    // of `a` may land later.
    let at_takeover = count(&*b);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    assert!(!acknowledged.is_empty() && !refused.is_empty());
    assert_eq!(
        count(&*b),
        at_takeover,
        "a batch of the old leader committed after the takeover"
    );
    assert_eq!(at_takeover, acknowledged.len() as i64);
    for n in &acknowledged {
        assert!(present(&*b, *n), "acknowledged batch {n} is missing");
    }
    for n in &refused {
        assert!(!present(&*b, *n), "refused batch {n} is there");
    }
    eprintln!(
        "{} batches committed before the takeover, {} refused after it",
        acknowledged.len(),
        refused.len()
    );
}

const CHILD_ROLE: &str = "ENGINE_TEST_LEASE_CHILD";
const CHILD_URL: &str = "ENGINE_TEST_LEASE_URL";
const CHILD_SCHEMA: &str = "ENGINE_TEST_LEASE_SCHEMA";

/// The child: leads with a 1 s lease it never renews, and writes synced batches, printing
/// `ack N` or `fenced N` for each, until three were refused.
fn lead_and_write() -> ! {
    let url = std::env::var(CHILD_URL).unwrap();
    let schema = std::env::var(CHILD_SCHEMA).unwrap();
    let engine = EngineConfig::postgres(PostgresConfig::new(url).schema(schema))
        .open(KEYSPACES)
        .unwrap();
    let epoch = acquire_until(&*engine, "child", Duration::from_secs(1));
    engine.leadership().unwrap().fence(LEASE, epoch);
    println!("leader {epoch}");
    let mut fenced = 0;
    for n in 0.. {
        match engine.write(batch(&*engine, n), Durability::Sync) {
            Ok(()) => println!("ack {n}"),
            Err(Error::Fenced { .. }) => {
                println!("fenced {n}");
                fenced += 1;
                if fenced == 3 {
                    break;
                }
            }
            Err(other) => println!("error {n} {other}"),
        }
    }
    println!("done");
    std::process::exit(0)
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_sigstopped_leader_never_commits_after_the_takeover() {
    if std::env::var(CHILD_ROLE).is_ok() {
        lead_and_write();
    }
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let b = open(&scratch);
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "leases::a_sigstopped_leader_never_commits_after_the_takeover",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROLE, "lead")
            .env(CHILD_URL, scratch.url())
            .env(CHILD_SCHEMA, scratch.schema())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, receiver) = std::sync::mpsc::channel();
        let reader = thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        let mut lines = Vec::new();
        // Paused at a random moment after its first acknowledgements (perhaps in the middle
        // of a transaction, holding the lease row's share lock).
        while !lines.iter().any(|l: &String| l.starts_with("ack ")) {
            lines.push(
                receiver
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the child leads and writes"),
            );
        }
        thread::sleep(Duration::from_millis(rand::random::<u64>() % 200));
        signal(&child, "STOP");
        let started = Instant::now();
        let holder = format!("b{round}");
        let epoch = acquire_until(&*b, &holder, Duration::from_secs(60));
        let waited = started.elapsed();
        b.leadership().unwrap().fence(LEASE, epoch);
        let at_takeover = count(&*b);
        b.write(batch(&*b, 1_000_000 + round), Durability::Sync)
            .unwrap();
        signal(&child, "CONT");
        let mut done = false;
        while let Ok(line) = receiver.recv_timeout(Duration::from_secs(60)) {
            done |= line == "done";
            lines.push(line);
            if done {
                break;
            }
        }
        assert!(done, "the child ends after three refusals: {lines:?}");
        assert!(child.wait().unwrap().success());
        reader.join().unwrap();
        assert_eq!(
            count(&*b),
            at_takeover + 1,
            "round {round}: the paused leader committed after the takeover"
        );
        let mut acks = 0;
        for line in &lines {
            if let Some(n) = line.strip_prefix("ack ") {
                assert!(present(&*b, n.parse().unwrap()), "acknowledged {n} missing");
                acks += 1;
            } else if let Some(n) = line.strip_prefix("fenced ") {
                assert!(!present(&*b, n.parse().unwrap()), "refused {n} present");
            } else {
                // The test harness's own lines pass; a batch failing otherwise does not.
                assert!(!line.starts_with("error "), "{line}");
            }
        }
        eprintln!(
            "round {round}: {acks} acknowledged, took over at epoch {epoch} after {waited:?}"
        );
        // The next child's batches restart from 0: clear this round's.
        let alpha = b.keyspace("alpha").unwrap();
        let mut clear = WriteBatch::new();
        clear.delete_range(alpha, 0u64.to_be_bytes(), 1_000_000u64.to_be_bytes());
        b.write(clear, Durability::Sync).unwrap();
        b.leadership()
            .unwrap()
            .release(LEASE, &holder, epoch)
            .unwrap();
    }
}
