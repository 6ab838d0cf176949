//! Backups of a store: RocksDB's checkpoint taken while a writer goes on holds exactly the
//! batches written before it; the backends without one say so; and on PostgreSQL, the
//! documented `pg_dump` of an engine's schema restores into a new database that opens with
//! every key and counter.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use engine::{Backend, Direction, Durability, Engine, EngineConfig, Error, ScanRange, WriteBatch};

use crate::harness::{TestStore, KEYSPACES};

/// Batch `n`: key `n` in `alpha`, a count in `beta`.
fn write_batch(engine: &dyn Engine, n: u32) {
    let alpha = engine.keyspace("alpha").unwrap();
    let beta = engine.keyspace("beta").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(alpha, n.to_be_bytes(), format!("value {n}").into_bytes());
    batch.counter_add(beta, b"batches", 1);
    engine.write(batch, Durability::Sync).unwrap();
}

/// Every key and value of the test's keyspaces.
fn everything(engine: &dyn Engine) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    KEYSPACES
        .iter()
        .map(|name| {
            engine
                .scan(
                    engine.keyspace(name).unwrap(),
                    ScanRange::all(),
                    Direction::Forward,
                )
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .collect()
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_rocksdb_checkpoint_under_writes_holds_every_batch_before_it_and_none_in_part() {
    let store = TestStore::new(Backend::Rocksdb, KEYSPACES);
    let engine = store.open();
    for n in 0..100 {
        write_batch(&*engine, n);
    }
    let written = Arc::new(AtomicU32::new(100));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, written, stop) =
            (Arc::clone(&engine), Arc::clone(&written), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = written.load(Ordering::Relaxed);
                write_batch(&*engine, n);
                written.store(n + 1, Ordering::Relaxed);
            }
        })
    };
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("checkpoint");
    let before = written.load(Ordering::Relaxed);
    engine.checkpoint(&path).unwrap();
    let after = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let restored = EngineConfig::new(Backend::Rocksdb, &path)
        .open(KEYSPACES)
        .unwrap();
    let alpha = restored.keyspace("alpha").unwrap();
    let beta = restored.keyspace("beta").unwrap();
    let keys: Vec<u32> = restored
        .scan(alpha, ScanRange::all(), Direction::Forward)
        .unwrap()
        .map(|kv| u32::from_be_bytes(kv.unwrap().0.try_into().unwrap()))
        .collect();
    // Batches are written in order by one writer: the copy holds a prefix of them, at least
    // every one acknowledged before the checkpoint began, and each whole (key and count).
    let held = u32::try_from(keys.len()).unwrap();
    assert_eq!(keys, (0..held).collect::<Vec<_>>());
    assert!(
        held >= before && held <= after + 1,
        "{before} <= {held} <= {after} + 1"
    );
    assert_eq!(restored.counter(beta, b"batches").unwrap(), i64::from(held));
    // The checkpoint's table files are the live store's; the live store goes on writing.
    write_batch(&*engine, 1_000_000);
    assert_eq!(
        restored.get(alpha, &1_000_000u32.to_be_bytes()).unwrap(),
        None
    );
}

#[test]
fn the_memory_engine_cannot_checkpoint_and_says_what_to_do() {
    let engine = EngineConfig::memory().open(KEYSPACES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let error = engine.checkpoint(&dir.path().join("copy")).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unsupported {
                backend: Backend::Memory,
                operation: "checkpoint",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("memory cannot checkpoint"),
        "{error}"
    );
    assert!(!dir.path().join("copy").exists());
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::process::Command;

    use engine::testing::{skip, PgScratch};
    use engine::{Backend, EngineConfig, Error, PostgresConfig};

    use super::{everything, write_batch};
    use crate::harness::KEYSPACES;

    /// The newest installed PostgreSQL's program `name` (Debian keeps them off the PATH).
    fn pg_program(name: &str) -> std::path::PathBuf {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's programs under /usr/lib/postgresql")
            .map(|entry| entry.unwrap().path().join("bin").join(name))
            .filter(|path| path.exists())
            .collect();
        found.sort();
        found
            .pop()
            .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
    }

    fn run(command: &mut Command) {
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn a_pg_dump_of_the_schema_restores_into_a_new_database_that_opens_whole() {
        if skip(Backend::Postgres) {
            return;
        }
        let scratch = PgScratch::new();
        let engine = scratch.config().open(KEYSPACES).unwrap();
        for n in 0..200 {
            write_batch(&*engine, n);
        }
        let original = everything(&*engine);
        // The documented backup: pg_dump of the engine's schema, custom format.
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("schema.dump");
        let url = std::env::var(engine::testing::POSTGRES_ENV).unwrap();
        run(Command::new(pg_program("pg_dump"))
            .args(["--format=custom", "--schema", scratch.schema(), "--file"])
            .arg(&dump)
            .arg(&url));
        // Restored into a database of its own (libpq takes the last dbname given).
        let database = format!("restore_{}", scratch.schema());
        scratch.admin(&format!("CREATE DATABASE \"{database}\""));
        let restored_url = format!("{url} dbname={database}");
        run(Command::new(pg_program("pg_restore"))
            .args(["--exit-on-error", "--no-owner", "--dbname"])
            .arg(&restored_url)
            .arg(&dump));
        let restored = EngineConfig::postgres(
            PostgresConfig::new(restored_url.clone()).schema(scratch.schema()),
        )
        .open(KEYSPACES)
        .unwrap();
        assert_eq!(everything(&*restored), original);
        let beta = restored.keyspace("beta").unwrap();
        assert_eq!(restored.counter(beta, b"batches").unwrap(), 200);
        // The restored store takes writes, and its checkpoint says to use pg_dump.
        write_batch(&*restored, 200);
        let error = restored.checkpoint(&dir.path().join("copy")).unwrap_err();
        assert!(matches!(error, Error::Unsupported { .. }), "{error}");
        assert!(error.to_string().contains("pg_dump"), "{error}");
        drop(restored);
        scratch.admin(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"));
    }
}
