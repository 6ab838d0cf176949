//! Crash tests with a real child process.
//!
//! Each test re-runs this test binary as a child (selected by an environment variable) that
//! writes to a store while the parent watches; the parent then checks the store as the next
//! process to open it would see it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use engine::{Backend, Durability, Engine, EngineConfig, Error, WriteBatch};
use rand::Rng;

const CHILD_ROLE: &str = "ENGINE_TEST_CHILD_ROLE";
const CHILD_STORE: &str = "ENGINE_TEST_CHILD_STORE";
const CHILD_BACKEND: &str = "ENGINE_TEST_CHILD_BACKEND";
const KEYSPACES: &[&str] = &["alpha", "beta"];
/// Keys written by every batch in `alpha`; with the one in `beta` and the counter a batch
/// touches both keyspaces.
const KEYS_PER_BATCH: u64 = 8;

fn batch_key(batch: u64, part: u64) -> Vec<u8> {
    engine::keys::KeyBuilder::new()
        .u64(batch)
        .u64(part)
        .finish()
}

/// How parent and child open the store: `store` is the directory, or on PostgreSQL the schema
/// (on the server of `LPSTORE_TEST_POSTGRES`).
fn config(backend: Backend, store: &str) -> EngineConfig {
    #[cfg(feature = "postgres")]
    if backend == Backend::Postgres {
        let url = std::env::var(engine::testing::POSTGRES_ENV).unwrap();
        return EngineConfig::postgres(engine::PostgresConfig::new(url).schema(store));
    }
    EngineConfig::new(backend, store)
}

/// The child: writes synced batches forever, printing `ack N` after batch N is acknowledged.
fn write_batches_until_killed(store: &str, backend: Backend) -> ! {
    let engine = config(backend, store).open(KEYSPACES).unwrap();
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let mut next = engine.counter(beta, b"batches").unwrap() as u64;
    loop {
        let mut batch = WriteBatch::new();
        for part in 0..KEYS_PER_BATCH {
            batch.put(alpha, batch_key(next, part), next.to_be_bytes());
        }
        batch.put(beta, batch_key(next, 0), b"marker");
        batch.counter_add(beta, b"batches", 1);
        engine.write(batch, Durability::Sync).unwrap();
        println!("ack {next}");
        next += 1;
    }
}

/// Checks that the batches present are exactly 0..n, each whole, with n covering every
/// acknowledged batch; returns n.
fn check_whole_batches(engine: &dyn Engine, acknowledged: Option<u64>) -> u64 {
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let present = engine.counter(beta, b"batches").unwrap() as u64;
    if let Some(last) = acknowledged {
        assert!(
            present > last,
            "batch {last} was acknowledged as synced but only {present} batches survived"
        );
    }
    let mut rows = 0u64;
    for item in engine
        .scan(alpha, engine::ScanRange::all(), engine::Direction::Forward)
        .unwrap()
    {
        let (key, value) = item.unwrap();
        let mut reader = engine::keys::KeyReader::new(&key);
        let batch = reader.u64().unwrap();
        assert!(
            batch < present,
            "batch {batch} is partly visible: its counter add is missing"
        );
        assert_eq!(value, batch.to_be_bytes());
        rows += 1;
    }
    assert_eq!(rows, present * KEYS_PER_BATCH, "a batch is partly visible");
    for batch in 0..present {
        assert!(
            engine.get(beta, &batch_key(batch, 0)).unwrap().is_some(),
            "batch {batch} lost its marker"
        );
    }
    present
}

fn synced_batches_survive_sigkill(backend: Backend, test_name: &str) {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("crash") {
        let store = std::env::var(CHILD_STORE).unwrap();
        write_batches_until_killed(&store, backend);
    }
    // A temporary directory, or a schema of its own on PostgreSQL (dropped at the end).
    let scratch = engine::testing::TestStore::new(backend, KEYSPACES);
    let path = match scratch.config().postgres {
        Some(postgres) => postgres.schema,
        None => scratch.config().path.display().to_string(),
    };
    let mut rng = rand::thread_rng();
    let mut survived = 0;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE, "crash")
            .env(CHILD_STORE, &path)
            .env(CHILD_BACKEND, backend.name())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, receiver) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    let _ = sender.send(n.parse::<u64>().unwrap());
                }
            }
        });
        // Wait for the first acknowledgement (the store is open and writing), then kill at a
        // random moment.
        let first = receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("child acknowledged a batch");
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let last = receiver.try_iter().last().unwrap_or(first);
        let engine = config(backend, &path).open(KEYSPACES).unwrap();
        let present = check_whole_batches(&*engine, Some(last));
        assert!(
            present >= survived,
            "round {round}: {present} batches after {survived} survived the round before"
        );
        eprintln!("{backend} round {round}: {present} batches present, last acknowledged {last}");
        survived = present;
    }
    assert!(survived > 0);
}

/// The child: writes until the file-size limit makes a write fail, then checks that the
/// engine refuses the next write as poisoned, and prints the verdict.
fn write_until_failure(path: &Path, backend: Backend) -> ! {
    let engine = EngineConfig::new(backend, path).open(KEYSPACES).unwrap();
    let alpha = engine.keyspace("alpha").unwrap();
    let value = vec![7u8; 16 << 10];
    let mut acknowledged = 0u64;
    let failure = loop {
        let mut batch = WriteBatch::new();
        batch.put(alpha, acknowledged.to_be_bytes(), &value);
        match engine.write(batch, Durability::Sync) {
            Ok(()) => acknowledged += 1,
            Err(error) => break error,
        }
        assert!(
            acknowledged < 100_000,
            "the file-size limit never made a write fail"
        );
    };
    assert!(
        matches!(failure, Error::Backend { .. }),
        "first failure: {failure}"
    );
    let mut batch = WriteBatch::new();
    batch.put(alpha, b"after", b"x");
    let refused = engine.write(batch, Durability::Sync).unwrap_err();
    assert!(
        matches!(refused, Error::Poisoned { .. }),
        "second write: {refused}"
    );
    assert!(refused.to_string().contains("refuses writes"), "{refused}");
    assert!(matches!(engine.flush(), Err(Error::Poisoned { .. })));
    // Reads still work.
    assert!(engine.get(alpha, &0u64.to_be_bytes()).unwrap().is_some());
    println!("poisoned after {acknowledged} writes");
    std::process::exit(0);
}

fn failed_write_poisons_the_engine(backend: Backend, test_name: &str) {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("poison") {
        let path = std::env::var(CHILD_STORE).unwrap();
        write_until_failure(Path::new(&path), backend);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // A file-size limit makes the write-ahead log's growth fail with EFBIG, a real I/O error;
    // SIGXFSZ is ignored so that the write returns the error instead of killing the process.
    let output = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "poison")
        .env(CHILD_STORE, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("poisoned after"),
        "child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_synced_batches_survive_sigkill() {
    synced_batches_survive_sigkill(
        Backend::Rocksdb,
        "crash::rocksdb_synced_batches_survive_sigkill",
    );
}

#[cfg(feature = "sled")]
#[test]
fn sled_synced_batches_survive_sigkill() {
    synced_batches_survive_sigkill(Backend::Sled, "crash::sled_synced_batches_survive_sigkill");
}

/// A client killed mid-batch: PostgreSQL keeps every acknowledged batch and rolls back the
/// one in flight whole (or has committed it whole).
#[cfg(feature = "postgres")]
#[test]
fn postgres_synced_batches_survive_sigkill() {
    if engine::testing::skip(Backend::Postgres) {
        return;
    }
    synced_batches_survive_sigkill(
        Backend::Postgres,
        "crash::postgres_synced_batches_survive_sigkill",
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_failed_write_poisons_the_engine() {
    failed_write_poisons_the_engine(
        Backend::Rocksdb,
        "crash::rocksdb_failed_write_poisons_the_engine",
    );
}

#[cfg(feature = "sled")]
#[test]
fn sled_failed_write_poisons_the_engine() {
    failed_write_poisons_the_engine(Backend::Sled, "crash::sled_failed_write_poisons_the_engine");
}
